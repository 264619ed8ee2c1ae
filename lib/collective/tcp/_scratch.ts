/**
 * The memory the TCP group's averages reuse, average after average, and the
 * SIMD kernels that work in it.
 *
 * @module
 */

import { Bf16Simd } from "../_simd_bf16.ts";
import { SimdSum, TERM_BYTES } from "../_simd_sum.ts";

const PAGE = 65_536;
/** Terms the SIMD sum's table has room for; an average of more sums in JavaScript. */
export const SIMD_TERMS = 256;

/** The SIMD kernels of a {@linkcode Scratch} over WebAssembly memory. */
export interface ScratchKernels {
  /** Weighted sums of terms in the scratch memory. */
  sum: SimdSum;
  /** bfloat16 rounding, packing and unpacking in the scratch memory. */
  bf16: Bf16Simd;
}

/**
 * Memory for what the averages send and sum, reused average after average.
 * A schedule waits until everything it sent is written before it returns,
 * so the next average may take the same memory: no fresh memory per chunk,
 * which costs more than the copies where page faults are slow.
 *
 * Where WebAssembly SIMD is available the memory is a shared
 * `WebAssembly.Memory` (it grows in place: what was taken stays valid), and
 * {@linkcode Scratch.kernels} sum and convert in it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Scratch } from "./_scratch.ts";
 *
 * const scratch = new Scratch();
 * const a = scratch.take(12);
 * assert.equal(a.byteOffset % 16, 0);
 * scratch.reset();
 * assert.equal(scratch.take(12).byteOffset, a.byteOffset); // the same memory, once reset
 * ```
 */
export class Scratch {
  /** The SIMD kernels; undefined where this runtime lacks WebAssembly SIMD. */
  readonly kernels: ScratchKernels | undefined;
  readonly #wasm: WebAssembly.Memory | undefined;
  #plain = new ArrayBuffer(0);
  /** The first byte after the SIMD sum's table. */
  readonly #first: number;
  #used: number;

  /** Scratch memory; `simd: false` for plain memory and no kernels. */
  constructor(options: { simd?: boolean } = {}) {
    if (options.simd !== false && !SimdSum.unavailable()) {
      const memory = new WebAssembly.Memory({ initial: 1, maximum: PAGE, shared: true });
      const sum = SimdSum.over(memory, { address: 0, terms: SIMD_TERMS });
      const bf16 = Bf16Simd.over(memory);
      if (sum && bf16) {
        this.#wasm = memory;
        this.kernels = { sum, bf16 };
      }
    }
    this.#first = this.#wasm ? SIMD_TERMS * TERM_BYTES : 0;
    this.#used = this.#first;
  }

  /** Frees everything taken so far (the average that took it has returned). */
  reset(): void {
    this.#used = this.#first;
  }

  /** `bytes` of memory, 16-byte aligned, not taken since the last reset. */
  take(bytes: number): Uint8Array {
    const end = this.#used + bytes;
    let buffer: ArrayBufferLike;
    if (this.#wasm) {
      const have = this.#wasm.buffer.byteLength;
      if (end > have) {
        const pages = Math.ceil((Math.max(2 * have, end) - have) / PAGE);
        try {
          this.#wasm.grow(pages);
        } catch {
          throw new RangeError(`an average needs ${end} bytes of scratch memory: over 4 GiB`);
        }
      }
      buffer = this.#wasm.buffer;
    } else {
      if (end > this.#plain.byteLength) {
        // What was taken keeps the old memory; the next average starts in the larger one.
        this.#plain = new ArrayBuffer(Math.max(2 * this.#plain.byteLength, end));
      }
      buffer = this.#plain;
    }
    const view = new Uint8Array(buffer, this.#used, bytes);
    this.#used += 16 * Math.ceil(bytes / 16);
    return view;
  }

  /** `count` float32 values. */
  floats(count: number): Float32Array {
    const bytes = this.take(4 * count);
    return new Float32Array(bytes.buffer, bytes.byteOffset, count);
  }
}
