/**
 * bfloat16 rounding, packing and unpacking in WebAssembly SIMD, over vectors
 * in a shared `WebAssembly.Memory`: the bits of `lib/util/bf16.ts`'s scalar
 * loops (round to nearest, ties to even; a NaN stays a quiet NaN), four or
 * eight values at a time — for `--wire bf16`, whose every average rounds,
 * packs and unpacks the whole vector.
 *
 * @module
 */

import { fromBf16Bits, packBf16, roundToBf16 } from "../util/bf16.ts";
import { compiledOnce, loop16, loopBy, op, type WasmFunction, wasmModule } from "../util/wasm.ts";

/**
 * Pushes the bfloat16 high halves of the four float32 bit patterns in local
 * `x` (as i32x4 lanes), with local `high` as a temporary:
 * `(x + 0x7fff + ((x >>> 16) & 1)) >>> 16`, or `(x >>> 16) | 0x40` for a NaN.
 */
function bf16High(x: number, high: number): number[][] {
  const splat = (value: number) => [op.i32_const(value), op.i32x4_splat()];
  return [
    // The NaN's result: its high half, quiet.
    op.local_get(x),
    op.i32_const(16),
    op.i32x4_shr_u(),
    op.local_tee(high),
    ...splat(0x40),
    op.v128_or(),
    // Everything else: rounded to nearest, ties to even.
    op.local_get(high),
    ...splat(1),
    op.v128_and(),
    op.local_get(x),
    op.i32x4_add(),
    ...splat(0x7fff),
    op.i32x4_add(),
    op.i32_const(16),
    op.i32x4_shr_u(),
    // Which lanes are NaN: |x| above infinity's bits.
    op.local_get(x),
    ...splat(0x7fffffff),
    op.v128_and(),
    ...splat(0x7f800000),
    op.i32x4_gt_u(),
    op.v128_bitselect(),
  ];
}

function bf16Module(): Uint8Array<ArrayBuffer> {
  // round(p, end): p[0, end) bytes of float32 rounded in place.
  const [P, END, I, X, H] = [0, 1, 2, 3, 4];
  const round: WasmFunction = {
    name: "round",
    params: ["i32", "i32"],
    locals: ["i32", "v128", "v128"],
    body: loop16({ i: I, end: END }, (at) => [
      ...at(P),
      ...at(P),
      op.v128_load(),
      op.local_set(X),
      ...bf16High(X, H),
      op.i32_const(16),
      op.i32x4_shl(),
      op.v128_store(),
    ]),
  };
  // pack(src, dst, end): src[0, end) bytes of float32 (end a multiple of 32) as u16 at dst.
  const [SRC, DST, END3, I3, J3, A, B, H3] = [0, 1, 2, 3, 4, 5, 6, 7];
  const at = (base: number, offset: number, extra = 0) => [
    op.local_get(base),
    op.local_get(offset),
    op.i32_add(),
    ...(extra === 0 ? [] : [op.i32_const(extra), op.i32_add()]),
  ];
  const pack: WasmFunction = {
    name: "pack",
    params: ["i32", "i32", "i32"],
    locals: ["i32", "i32", "v128", "v128", "v128"],
    body: loopBy({ i: I3, end: END3, step: 32, alongside: [{ local: J3, step: 16 }] }, [
      ...at(DST, J3),
      ...at(SRC, I3),
      op.v128_load(),
      op.local_set(A),
      ...at(SRC, I3, 16),
      op.v128_load(),
      op.local_set(B),
      ...bf16High(A, H3),
      ...bf16High(B, H3),
      op.i16x8_narrow_i32x4_u(),
      op.v128_store(),
    ]),
  };
  // unpack(src, dst, end): u16 at src as float32 at dst[0, end) bytes (end a multiple of 16).
  const unpack: WasmFunction = {
    name: "unpack",
    params: ["i32", "i32", "i32"],
    locals: ["i32", "i32"],
    body: loopBy({ i: I3, end: END3, step: 16, alongside: [{ local: J3, step: 8 }] }, [
      ...at(DST, I3),
      ...at(SRC, J3),
      op.v128_load16x4_u(),
      op.i32_const(16),
      op.i32x4_shl(),
      op.v128_store(),
    ]),
  };
  return wasmModule({ initial: 1, maximum: 65536, shared: true }, [round, pack, unpack]);
}

const bf16Kernel = compiledOnce(bf16Module);

/**
 * bfloat16 rounding, packing and unpacking of vectors that live in one shared
 * `WebAssembly.Memory`, with SIMD kernels; the bits of `roundToBf16`,
 * `packBf16` and `fromBf16Bits`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Bf16Simd } from "./_simd_bf16.ts";
 *
 * const memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
 * const bf16 = Bf16Simd.over(memory)!;
 * const values = new Float32Array(memory.buffer, 0, 9).fill(1 + 2 ** -8); // a tie: to even
 * const bits = new Uint16Array(memory.buffer, 64, 9);
 * bf16.pack(values, bits);
 * assert.deepEqual([...bits], new Array(9).fill(0x3f80));
 * ```
 */
export class Bf16Simd {
  readonly #round: (p: number, end: number) => void;
  readonly #pack: (src: number, dst: number, end: number) => void;
  readonly #unpack: (src: number, dst: number, end: number) => void;

  /** A kernel over `memory`; undefined where this runtime lacks WebAssembly SIMD. */
  static over(memory: WebAssembly.Memory): Bf16Simd | undefined {
    const module = bf16Kernel();
    return module === null ? undefined : new Bf16Simd(memory, module);
  }

  private constructor(memory: WebAssembly.Memory, module: WebAssembly.Module) {
    const { exports } = new WebAssembly.Instance(module, { env: { memory } });
    this.#round = exports.round as (p: number, end: number) => void;
    this.#pack = exports.pack as (src: number, dst: number, end: number) => void;
    this.#unpack = exports.unpack as (src: number, dst: number, end: number) => void;
  }

  /** Rounds `values` (a view of the memory) to bfloat16 in place. */
  round(values: Float32Array): void {
    const aligned = values.length - (values.length % 4);
    this.#round(values.byteOffset, 4 * aligned);
    roundToBf16(values, aligned, values.length);
  }

  /** Writes `values` rounded to bfloat16 into `into` (both views of the memory) as 16 bits each. */
  pack(values: Float32Array, into: Uint16Array): void {
    const aligned = into.length - (into.length % 8);
    this.#pack(values.byteOffset, into.byteOffset, 4 * aligned);
    packBf16(values, aligned, into.subarray(aligned));
  }

  /** Writes the float32 values of `bits` into `out` (both views of the memory). */
  unpack(bits: Uint16Array, out: Float32Array): void {
    const aligned = bits.length - (bits.length % 4);
    this.#unpack(bits.byteOffset, out.byteOffset, 4 * aligned);
    fromBf16Bits(bits.subarray(aligned), out, aligned);
  }
}
