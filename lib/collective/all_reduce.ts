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
}

/** One replica's part in a reduction. */
export interface Contribution {
  /** The local vector. */
  data: Float32Array;
  /** Its weight, e.g. the number of examples it was computed from (may be 0). */
  weight: number;
}

/**
 * `Σ wᵣ·xᵣ / Σ wᵣ` over `contributions` in the given order, accumulated in
 * float64 and rounded once to float32. With one contribution the result equals
 * its data exactly. Writes into `options.out` when given (which may be one of
 * the inputs' `data`).
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
 * assert.ok(avg.join() === "2,3");
 * ```
 */
export function weightedAverage(
  contributions: readonly Contribution[],
  options: { out?: Float32Array } = {},
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
  const out = options.out ?? new Float32Array(length);
  const parts = contributions.filter((c) => c.weight !== 0);
  for (let i = 0; i < length; i++) {
    let sum = 0;
    for (const { data, weight } of parts) sum += weight * data[i];
    out[i] = sum / total;
  }
  return out;
}
