/**
 * The all-reduce contract and its reference arithmetic.
 *
 * @module
 */

/**
 * A weighted-average all-reduce among the replicas of one training group.
 *
 * Every replica calls {@linkcode AllReduce.average} once per step with its
 * local vector and weight (its number of examples). All calls resolve with the
 * same vector, bit for bit: `Σ wᵣ·xᵣ / Σ wᵣ`, summed in rank order.
 */
export interface AllReduce {
  /**
   * Contributes `data` with `weight` and resolves with the weighted average.
   * `data`'s buffer may be transferred away: do not use it afterwards.
   */
  average(data: Float32Array<ArrayBuffer>, weight: number): Promise<Float32Array<ArrayBuffer>>;
  /** Where the last {@linkcode AllReduce.average} spent its time. */
  readonly lastTiming: AllReduceTiming;
}

/** Where one all-reduce spent its time, on one replica. */
export interface AllReduceTiming {
  /** Milliseconds waiting for slower replicas to contribute. */
  waitMs: number;
  /** Milliseconds copying, moving and summing, waiting excluded. */
  reduceMs: number;
}

/**
 * The all-reduce algorithms of the library: `"shared"`, the zero-copy
 * reduce-scatter/all-gather over shared memory among workers of one process
 * (the default), and `"star"`, the coordinator-centred baseline over message
 * channels (which a transport between hosts can carry).
 */
export type AllReduceAlgorithm = "shared" | "star";

/** The values of {@linkcode AllReduceAlgorithm}. */
export const ALL_REDUCE_ALGORITHMS: readonly AllReduceAlgorithm[] = ["shared", "star"];

/** One replica's part in a reduction. */
export interface Contribution {
  /** The local vector. */
  data: Float32Array;
  /** Its weight, e.g. the number of examples it was computed from (may be 0). */
  weight: number;
}

/** Options for {@linkcode weightedAverage}. */
export interface WeightedAverageOptions {
  /** Where to write the result (may be one of the inputs' `data`). Default: a new array. */
  out?: Float32Array;
  /** First element to average. Default 0. */
  start?: number;
  /** End (exclusive) of the elements to average. Default: the vectors' length. */
  end?: number;
}

/**
 * `Σ wᵣ·xᵣ / Σ wᵣ` over `contributions`, element by element in `[start, end)`.
 *
 * Every element is accumulated in float64, adding the contributions in the
 * order given (skipping zero weights), and rounded once to float32. All
 * all-reduce algorithms of this library use this function, so they agree bit
 * for bit; with one contribution the result equals its data exactly.
 *
 * @example The gradient of the mean over 3 + 1 examples
 * ```ts
 * import assert from "node:assert/strict";
 * import { weightedAverage } from "./all_reduce.ts";
 *
 * const avg = weightedAverage([
 *   { data: new Float32Array([1, 2]), weight: 3 },
 *   { data: new Float32Array([5, 6]), weight: 1 },
 * ]);
 * assert.deepEqual([...avg], [2, 3]);
 * ```
 */
export function weightedAverage(
  contributions: readonly Contribution[],
  options: WeightedAverageOptions = {},
): Float32Array {
  if (contributions.length === 0) throw new RangeError("nothing to average");
  const length = contributions[0].data.length;
  for (const { data } of contributions) {
    if (data.length !== length) {
      throw new RangeError(`cannot average vectors of lengths ${length} and ${data.length}`);
    }
  }
  const total = contributions.reduce((sum, c) => sum + c.weight, 0);
  if (!(total > 0)) throw new RangeError(`total weight must be positive, got ${total}`);
  const start = options.start ?? 0;
  const end = options.end ?? length;
  const out = options.out ?? new Float32Array(length);
  // Contribution by contribution over a float64 accumulator: the same additions, in the same
  // order, for every element as a per-element loop, but with sequential memory access.
  const sum = new Float64Array(end - start);
  for (const { data, weight } of contributions) {
    if (weight === 0) continue;
    for (let i = start; i < end; i++) sum[i - start] += weight * data[i];
  }
  for (let i = start; i < end; i++) out[i] = sum[i - start] / total;
  return out;
}
