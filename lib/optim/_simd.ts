/**
 * The optimizers' update loops in WebAssembly SIMD (four float32 lanes at a
 * time), giving the bits of the scalar loops in sgd.ts and adam.ts: the same
 * operations in the same order, each rounded to float32, no fused
 * multiply-add. `tests/optim_simd_test.ts` compares the two bit for bit.
 *
 * The optimizer state lives in the module's memory; weights and gradient
 * pass through it in blocks small enough to stay in the cache, so any
 * `Float32Array` can be updated.
 *
 * @module
 */

import { loop16, op, type ValueType, type WasmFunction, wasmModule } from "../util/wasm.ts";

/** Elements per block copied through the module's memory (128 KiB of weights and gradient). */
const BLOCK = 16384;
const PAGE = 65536;

/** What an SGD kernel does, fixed when it is built. */
export interface SgdVariant {
  decay: boolean;
  momentum: boolean;
  nesterov: boolean;
}

const SGD_VARIANTS: readonly SgdVariant[] = [false, true].flatMap((decay) => [
  { decay, momentum: false, nesterov: false },
  { decay, momentum: true, nesterov: false },
  { decay, momentum: true, nesterov: true },
]);

/** The export name of an SGD variant, e.g. `sgd_decay_nesterov`. */
function sgdName(v: SgdVariant): string {
  return ["sgd", v.decay && "decay", v.momentum && "momentum", v.nesterov && "nesterov"]
    .filter(Boolean).join("_");
}

/** Locals `first…` set to the splats of float32 parameters `params`. */
function splats(params: readonly number[], first: number): number[][] {
  return params.flatMap((p, k) => [op.local_get(p), op.f32x4_splat(), op.local_set(first + k)]);
}

/**
 * SGD: params `(w, g, b, bytes, lr, momentum, decay)`, addresses in bytes:
 * `d ← g + decay·w`, `b ← momentum·b + d`, `w ← w − lr·(nesterov ? d + momentum·b : b)`,
 * or `w ← w − lr·d` without momentum; without decay `d` is `g` itself.
 */
function sgdKernel(v: SgdVariant): WasmFunction {
  const [W, G, B, END, LR, MOM, DEC] = [0, 1, 2, 3, 4, 5, 6];
  const [I, Dv, Bv, LRv, MOMv, DECv] = [7, 8, 9, 10, 11, 12];
  const body = loop16({ i: I, end: END }, (at) => {
    const d = v.decay
      ? [...at(G), op.v128_load(), op.local_get(DECv), ...at(W), op.v128_load(), op.f32x4_mul()]
        .concat([op.f32x4_add()])
      : [...at(G), op.v128_load()];
    const update = !v.momentum ? [op.local_get(Dv)] : [
      op.local_get(MOMv),
      ...at(B),
      op.v128_load(),
      op.f32x4_mul(),
      op.local_get(Dv),
      op.f32x4_add(),
      op.local_set(Bv),
      ...at(B),
      op.local_get(Bv),
      op.v128_store(),
      ...(v.nesterov
        ? [op.local_get(Dv), op.local_get(MOMv), op.local_get(Bv), op.f32x4_mul(), op.f32x4_add()]
        : [op.local_get(Bv)]),
    ];
    return [
      ...d,
      op.local_set(Dv),
      ...at(W),
      ...at(W),
      op.v128_load(),
      op.local_get(LRv),
      ...update,
      op.f32x4_mul(),
      op.f32x4_sub(),
      op.v128_store(),
    ];
  });
  const params: ValueType[] = ["i32", "i32", "i32", "i32", "f32", "f32", "f32"];
  return {
    name: sgdName(v),
    params,
    locals: ["i32", "v128", "v128", "v128", "v128", "v128"],
    body: [...splats([LR, MOM, DEC], LRv), ...body],
  };
}

/**
 * Adam: params `(w, g, m, v, bytes, b1, b2, c1, c2, eps, stepSize, root2, decay)`:
 * `d ← g + decay·w`, `m ← b1·m + c1·d`, `v ← b2·v + c2·d²`,
 * `w ← w − stepSize·(m / (√v / root2 + eps))`.
 */
function adamKernel(decay: boolean): WasmFunction {
  const [W, G, M, V, END] = [0, 1, 2, 3, 4];
  const scalars = [5, 6, 7, 8, 9, 10, 11, 12]; // b1 b2 c1 c2 eps stepSize root2 decay
  const [I, Dv, Mv, Vv] = [13, 14, 15, 16];
  const [B1, B2, C1, C2, EPS, SS, R2, DEC] = [17, 18, 19, 20, 21, 22, 23, 24];
  const body = loop16({ i: I, end: END }, (at) => [
    ...(decay
      ? [...at(G), op.v128_load(), op.local_get(DEC), ...at(W), op.v128_load(), op.f32x4_mul()]
        .concat([op.f32x4_add()])
      : [...at(G), op.v128_load()]),
    op.local_set(Dv),
    // m ← b1·m + c1·d
    op.local_get(B1),
    ...at(M),
    op.v128_load(),
    op.f32x4_mul(),
    op.local_get(C1),
    op.local_get(Dv),
    op.f32x4_mul(),
    op.f32x4_add(),
    op.local_set(Mv),
    ...at(M),
    op.local_get(Mv),
    op.v128_store(),
    // v ← b2·v + c2·(d·d)
    op.local_get(B2),
    ...at(V),
    op.v128_load(),
    op.f32x4_mul(),
    op.local_get(C2),
    op.local_get(Dv),
    op.local_get(Dv),
    op.f32x4_mul(),
    op.f32x4_mul(),
    op.f32x4_add(),
    op.local_set(Vv),
    ...at(V),
    op.local_get(Vv),
    op.v128_store(),
    // w ← w − stepSize·(m / (√v / root2 + eps))
    ...at(W),
    ...at(W),
    op.v128_load(),
    op.local_get(SS),
    op.local_get(Mv),
    op.local_get(Vv),
    op.f32x4_sqrt(),
    op.local_get(R2),
    op.f32x4_div(),
    op.local_get(EPS),
    op.f32x4_add(),
    op.f32x4_div(),
    op.f32x4_mul(),
    op.f32x4_sub(),
    op.v128_store(),
  ]);
  return {
    name: decay ? "adam_decay" : "adam",
    params: ["i32", "i32", "i32", "i32", "i32", ...scalars.map((): ValueType => "f32")],
    locals: ["i32", "v128", "v128", "v128", ...scalars.map((): ValueType => "v128")],
    body: [...splats(scalars, B1), ...body],
  };
}

function kernelModule(pages: number): Uint8Array<ArrayBuffer> {
  return wasmModule({ initial: pages }, [
    ...SGD_VARIANTS.map(sgdKernel),
    adamKernel(false),
    adamKernel(true),
  ]);
}

/** Whether this runtime compiles WebAssembly SIMD (every current browser, Deno and Node do). */
export const SIMD_AVAILABLE: boolean = (() => {
  try {
    return WebAssembly.validate(kernelModule(1));
  } catch {
    return false;
  }
})();

let compiled: WebAssembly.Module | undefined;

type Kernel = (...args: number[]) => void;

/**
 * An optimizer's memory: `slots` state vectors of `size` float32 values
 * (zeros at first) and a block of weights and gradient, with the kernels
 * that update them.
 */
export class SimdMemory {
  /** The state vectors, views of the module's memory (each padded to a multiple of 4). */
  readonly slots: Float32Array<ArrayBuffer>[];
  readonly #size: number;
  readonly #kernels: Record<string, Kernel>;
  readonly #w: Float32Array;
  readonly #g: Float32Array;

  /** Memory for `slots` state vectors of `size` values. */
  constructor(size: number, slots: number) {
    const padded = Math.ceil(size / 4) * 4;
    const bytes = 4 * (2 * BLOCK + slots * padded);
    const memory = new WebAssembly.Memory({ initial: Math.max(1, Math.ceil(bytes / PAGE)) });
    compiled ??= new WebAssembly.Module(kernelModule(1));
    const instance = new WebAssembly.Instance(compiled, { env: { memory } });
    this.#kernels = instance.exports as Record<string, Kernel>;
    this.#size = size;
    const buffer = memory.buffer as ArrayBuffer; // not shared
    this.#w = new Float32Array(buffer, 0, BLOCK);
    this.#g = new Float32Array(buffer, 4 * BLOCK, BLOCK);
    this.slots = Array.from(
      { length: slots },
      (_, k) => new Float32Array(buffer, 4 * (2 * BLOCK + k * padded), padded),
    );
  }

  /** One SGD step of the given variant over `weights` (see sgd.ts for the arithmetic). */
  sgd(
    weights: Float32Array,
    gradient: Float32Array,
    v: SgdVariant & { lr: number; momentumFactor: number; decayFactor: number },
  ): void {
    const kernel = this.#kernels[sgdName(v)];
    const b = v.momentum ? this.slots[0].byteOffset : 0;
    this.#blocks(weights, gradient, (start, bytes) => {
      kernel(0, 4 * BLOCK, b + 4 * start, bytes, v.lr, v.momentumFactor, v.decayFactor);
    });
  }

  /** One Adam step over `weights` with slots 0 and 1 as the moments (see adam.ts). */
  adam(
    weights: Float32Array,
    gradient: Float32Array,
    s: {
      b1: number;
      b2: number;
      c1: number;
      c2: number;
      eps: number;
      stepSize: number;
      root2: number;
      decay: number;
    },
  ): void {
    const kernel = this.#kernels[s.decay === 0 ? "adam" : "adam_decay"];
    const [m, v] = this.slots.map((slot) => slot.byteOffset);
    this.#blocks(weights, gradient, (start, bytes) => {
      kernel(
        0,
        4 * BLOCK,
        m + 4 * start,
        v + 4 * start,
        bytes,
        s.b1,
        s.b2,
        s.c1,
        s.c2,
        s.eps,
        s.stepSize,
        s.root2,
        s.decay,
      );
    });
  }

  /**
   * Copies `weights` and `gradient` through the block in turn, runs
   * `update(first element, bytes to update)` on each, and copies the weights
   * back. The lanes past the end of the last block update only padding.
   */
  #blocks(
    weights: Float32Array,
    gradient: Float32Array,
    update: (start: number, bytes: number) => void,
  ): void {
    const size = this.#size;
    for (let start = 0; start < size; start += BLOCK) {
      const n = Math.min(BLOCK, size - start);
      this.#w.set(weights.subarray(start, start + n));
      this.#g.set(gradient.subarray(start, start + n));
      update(start, 16 * Math.ceil(n / 4));
      weights.set(this.#w.subarray(0, n), start);
    }
  }
}
