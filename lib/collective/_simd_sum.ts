/**
 * The shared-memory all-reduce's sum in WebAssembly SIMD: the bits of
 * {@linkcode weightedAverage} (float32 inputs widened to float64, each times
 * its weight, added left to right in rank order, rounded once to float32),
 * two float64 lanes at a time, over the shared memory itself.
 *
 * @module
 */

import { type Contribution, sumTerms } from "./all_reduce.ts";
import {
  compiledOnce,
  loop16,
  op,
  type ValueType,
  type WasmFunction,
  wasmModule,
} from "../util/wasm.ts";

/** Bytes of one term in the table: its weight (float64), its vector's address (int32), padding. */
export const TERM_BYTES = 16;

/** Lanes 8–15 of a vector twice: its floats 2 and 3 where `promote_low` reads. */
const HIGH = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];
/** The low halves of two vectors: floats 0, 1 of the first, then 0, 1 of the second. */
const LOWS = [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23];

/** Pushes `weight` · (floats 0–1, or 2–3, of `x` widened to float64); both are locals. */
function widenedProduct(weight: number, x: number, half: "low" | "high"): number[][] {
  return [
    op.local_get(weight),
    op.local_get(x),
    ...(half === "high" ? [op.local_get(x), op.i8x16_shuffle(HIGH)] : []),
    op.f64x2_promote_low_f32x4(),
    op.f64x2_mul(),
  ];
}

/**
 * Stores the float64 pairs of locals `lo` and `hi`, each rounded to
 * float32, as four floats at the address on the stack.
 */
function demoteAndStore(lo: number, hi: number): number[][] {
  return [
    op.local_get(lo),
    op.f32x4_demote_f64x2_zero(),
    op.local_get(hi),
    op.f32x4_demote_f64x2_zero(),
    op.i8x16_shuffle(LOWS),
    op.v128_store(),
  ];
}

/**
 * `sum{k}(out, first, bytes, address₀ … address_{k−1}, weight₀ … weight_{k−1})`:
 * the table kernel's arithmetic for a fixed number of terms, with the
 * weights in registers and no inner loop: the shared all-reduce's usual case
 * (one term per replica, up to four).
 */
function fixedSum(k: number): WasmFunction {
  const [OUT, FIRST, END] = [0, 1, 2];
  const address = (j: number) => 3 + j;
  const weight = (j: number) => 3 + k + j;
  const [I, LO, HI, X] = [3 + 2 * k, 4 + 2 * k, 5 + 2 * k, 6 + 2 * k];
  const splatted = (j: number) => 7 + 2 * k + j;
  const setup = [
    ...Array.from({ length: k }, (_, j) => [
      op.local_get(weight(j)),
      op.f64x2_splat(),
      op.local_set(splatted(j)),
      op.local_get(address(j)),
      op.local_get(FIRST),
      op.i32_add(),
      op.local_set(address(j)),
    ]).flat(),
    op.local_get(OUT),
    op.local_get(FIRST),
    op.i32_add(),
    op.local_set(OUT),
  ];
  const term = (j: number, half: "low" | "high") => [
    ...(j === 0 ? [] : [op.local_get(half === "low" ? LO : HI)]),
    ...widenedProduct(splatted(j), X, half),
    ...(j === 0 ? [] : [op.f64x2_add()]),
    op.local_set(half === "low" ? LO : HI),
  ];
  const body = loop16({ i: I, end: END }, (at) => [
    ...Array.from({ length: k }, (_, j) => [
      ...at(address(j)),
      op.v128_load(),
      op.local_set(X),
      ...term(j, "low"),
      ...term(j, "high"),
    ]).flat(),
    ...at(OUT),
    ...demoteAndStore(LO, HI),
  ]);
  return {
    name: `sum${k}`,
    params: [
      "i32",
      "i32",
      "i32",
      ...Array.from({ length: k }, (): ValueType => "i32"),
      ...Array.from({ length: k }, (): ValueType => "f64"),
    ],
    locals: ["i32", "v128", "v128", "v128", ...Array.from({ length: k }, (): ValueType => "v128")],
    body: [...setup, ...body],
  };
}

/**
 * `sum(table, count, out, first, bytes)`: for each 16 bytes `i` below
 * `bytes`, the four floats at `out + first + i` become
 * `Σₖ weightₖ · x(addressₖ + first + i)` over the `count` terms of the
 * table (the first term initialises the sum, as in the scalar loop, so a
 * lone −0 stays −0).
 */
function sumModule(): Uint8Array<ArrayBuffer> {
  const [TABLE, COUNT, OUT, FIRST, END] = [0, 1, 2, 3, 4];
  const [I, K, T, LO, HI, X, W] = [5, 6, 7, 8, 9, 10, 11];
  /** X ← the term at table entry `entry`'s vector, W ← its weight in both lanes. */
  const load = (entry: number) => [
    op.local_get(entry),
    op.i32_load(8),
    op.local_get(FIRST),
    op.i32_add(),
    op.local_get(I),
    op.i32_add(),
    op.v128_load(),
    op.local_set(X),
    op.local_get(entry),
    op.f64_load(0),
    op.f64x2_splat(),
    op.local_set(W),
  ];
  const product = (half: "low" | "high") => widenedProduct(W, X, half);
  const body = loop16({ i: I, end: END }, () => [
    ...load(TABLE),
    ...product("low"),
    op.local_set(LO),
    ...product("high"),
    op.local_set(HI),
    op.i32_const(1),
    op.local_set(K),
    op.local_get(TABLE),
    op.i32_const(TERM_BYTES),
    op.i32_add(),
    op.local_set(T),
    op.block(),
    op.loop(),
    op.local_get(K),
    op.local_get(COUNT),
    op.i32_ge_u(),
    op.br_if(1),
    ...load(T),
    op.local_get(LO),
    ...product("low"),
    op.f64x2_add(),
    op.local_set(LO),
    op.local_get(HI),
    ...product("high"),
    op.f64x2_add(),
    op.local_set(HI),
    op.local_get(T),
    op.i32_const(TERM_BYTES),
    op.i32_add(),
    op.local_set(T),
    op.local_get(K),
    op.i32_const(1),
    op.i32_add(),
    op.local_set(K),
    op.br(0),
    op.end(),
    op.end(),
    op.local_get(OUT),
    op.local_get(FIRST),
    op.i32_add(),
    op.local_get(I),
    op.i32_add(),
    ...demoteAndStore(LO, HI),
  ]);
  return wasmModule({ initial: 1, maximum: 65536, shared: true }, [
    {
      name: "sum",
      params: ["i32", "i32", "i32", "i32", "i32"],
      locals: ["i32", "i32", "i32", "v128", "v128", "v128", "v128"],
      body,
    },
    ...[1, 2, 3, 4].map(fixedSum),
  ]);
}

type SumFunction = (table: number, count: number, out: number, first: number, end: number) => void;

/** The compiled module, or null where this runtime lacks WebAssembly SIMD or shared memory. */
const sumKernel = compiledOnce(sumModule);

/**
 * The weighted average of vectors that live in one shared
 * `WebAssembly.Memory`, into a vector of the same memory, with the SIMD
 * kernel; the bits of {@linkcode weightedAverage}.
 */
export class SimdSum {
  readonly #sum: SumFunction;
  /** `sum1` … `sum4`, by number of terms. */
  readonly #fixed: ((...args: number[]) => void)[];
  readonly #table: DataView;
  readonly #tableAddress: number;
  readonly #capacity: number;

  /** Whether this runtime lacks what the kernel needs (WebAssembly SIMD, shared memory). */
  static unavailable(): boolean {
    return sumKernel() === null;
  }

  /**
   * A summer over `memory` that writes its table of terms at byte
   * `table.address` (room for `table.terms` terms); undefined where the
   * kernel is not available.
   */
  static over(
    memory: WebAssembly.Memory,
    table: { address: number; terms: number },
  ): SimdSum | undefined {
    const module = sumKernel();
    return module === null ? undefined : new SimdSum(memory, module, table);
  }

  private constructor(
    memory: WebAssembly.Memory,
    module: WebAssembly.Module,
    table: { address: number; terms: number },
  ) {
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    this.#sum = instance.exports.sum as SumFunction;
    this.#fixed = [1, 2, 3, 4].map((k) =>
      instance.exports[`sum${k}`] as (...args: number[]) => void
    );
    this.#table = new DataView(memory.buffer, table.address, table.terms * TERM_BYTES);
    this.#tableAddress = table.address;
    this.#capacity = table.terms;
  }

  /**
   * `out[i] = Σ wᵣ·xᵣ[i] / Σ wᵣ` for `i` in `[start, end)`, as
   * `weightedAverage(contributions, { out, start, end })` gives it, where
   * `terms` are `averagedTerms(contributions)` and every vector is a view of
   * this memory.
   */
  average(
    terms: readonly Contribution[],
    into: { out: Float32Array; start: number; end: number },
  ): void {
    const { out, start, end } = into;
    if (terms.length === 0 || terms.length > this.#capacity) {
      throw new RangeError(`cannot sum ${terms.length} terms (room for ${this.#capacity})`);
    }
    const aligned = start + 4 * Math.floor((end - start) / 4);
    const [first, bytes] = [4 * start, 4 * (aligned - start)];
    if (bytes > 0 && terms.length <= this.#fixed.length) {
      const addresses = terms.map((t) => t.data.byteOffset);
      this.#fixed[terms.length - 1](
        out.byteOffset,
        first,
        bytes,
        ...addresses,
        ...terms.map((t) => t.weight),
      );
    } else if (bytes > 0) {
      terms.forEach(({ data, weight }, k) => {
        this.#table.setFloat64(k * TERM_BYTES, weight, true);
        this.#table.setInt32(k * TERM_BYTES + 8, data.byteOffset, true);
      });
      this.#sum(this.#tableAddress, terms.length, out.byteOffset, first, bytes);
    }
    if (aligned < end) {
      sumTerms(terms, { out, start: aligned, end }); // the last 1–3 elements
    }
  }
}
