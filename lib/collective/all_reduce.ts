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
 *
 * A replica may contribute several parts (e.g. the gradients of several
 * shards of its batch): `data` then holds one vector per weight, back to
 * back, and the parts are summed in order, each in its own place in the rank
 * order — so 1 replica with parts a, b gives the bits 2 replicas with a and b
 * give.
 */
export interface AllReduce {
  /**
   * Contributes `data` with `weight` (or the parts of `data` with `weight`'s
   * entries) and resolves with the weighted average, one vector long.
   * `data`'s buffer may be transferred away: do not use it afterwards.
   */
  average(
    data: Float32Array<ArrayBuffer>,
    weight: number | readonly number[],
  ): Promise<Float32Array<ArrayBuffer>>;
  /** Where the last {@linkcode AllReduce.average} spent its time. */
  readonly lastTiming: AllReduceTiming;
}

/**
 * An all-reduce that can also run the optimizer sharded, as ZeRO stage 1
 * does: each rank reduces one chunk of the vector (a reduce-scatter), updates
 * the weights of that chunk only, and the all-gather carries updated weights
 * instead of averaged gradients. An element-wise optimizer gives the bits of
 * the unsharded update, while each rank keeps the optimizer state of its
 * chunk only.
 */
export interface ShardedAllReduce extends AllReduce {
  /** The elements `[start, end)` of the vector this rank reduces and updates. */
  readonly chunk: { start: number; end: number };
  /**
   * As {@linkcode AllReduce.average}, but before the all-gather this rank
   * passes its chunk of the average to `update`, which overwrites it in
   * place (with the updated weights) and returns true, or returns false to
   * decline (the chunk then keeps the average). Resolves on every rank with
   * the whole vector and the chunks whose rank declined, in order. The
   * vector may be the group's shared memory: read it before the next call.
   */
  averageAndUpdate(
    data: Float32Array<ArrayBuffer>,
    weight: number | readonly number[],
    update: (chunk: Float32Array) => boolean,
  ): Promise<{ vector: Float32Array; declined: { start: number; end: number }[] }>;
  /**
   * Every rank passes the values of its chunk's first `slice.length`
   * elements; rank 0 resolves with the first `length` elements of the
   * assembled vector, the other ranks with undefined. For the optimizer
   * state, gathered for a checkpoint.
   */
  gather(slice: Float32Array, length: number): Promise<Float32Array<ArrayBuffer> | undefined>;
}

/**
 * Whether `allReduce` can run a sharded optimizer (see {@linkcode ShardedAllReduce}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { canShard } from "./all_reduce.ts";
 *
 * assert.equal(canShard({ average: (data) => Promise.resolve(data), lastTiming: { waitMs: 0, reduceMs: 0 } }), false);
 * ```
 */
export function canShard(allReduce: AllReduce): allReduce is ShardedAllReduce {
  return typeof (allReduce as Partial<ShardedAllReduce>).averageAndUpdate === "function";
}

/** Where one all-reduce spent its time, on one replica. */
export interface AllReduceTiming {
  /** Milliseconds waiting for slower replicas to contribute. */
  waitMs: number;
  /** Milliseconds copying, moving and summing, waiting excluded. */
  reduceMs: number;
}

/** One replica's part in a reduction. */
export interface Contribution {
  /** The local vector. */
  data: Float32Array;
  /** Its weight, e.g. the number of examples it was computed from (may be 0). */
  weight: number;
}

/**
 * The parts of one replica's contribution: `data` cut into `weight.length`
 * vectors of `length` elements (one vector for a single weight).
 *
 * @example Two shards' gradients, back to back
 * ```ts
 * import assert from "node:assert/strict";
 * import { contributionParts } from "./all_reduce.ts";
 *
 * const parts = contributionParts(new Float32Array([1, 2, 3, 4]), { weight: [3, 1], length: 2 });
 * assert.deepEqual(parts.map((p) => [...p.data]), [[1, 2], [3, 4]]);
 * assert.deepEqual(parts.map((p) => p.weight), [3, 1]);
 * ```
 */
export function contributionParts(
  data: Float32Array<ArrayBuffer>,
  options: { weight: number | readonly number[]; length: number },
): { data: Float32Array<ArrayBuffer>; weight: number }[] {
  const { weight, length } = options;
  const weights = typeof weight === "number" ? [weight] : weight;
  if (weights.length === 0 || data.length !== weights.length * length) {
    throw new RangeError(
      `expected ${weights.length} × ${length} elements, got ${data.length}`,
    );
  }
  if (weights.length === 1) return [{ data, weight: weights[0] }];
  return weights.map((w, j) => ({ data: data.subarray(j * length, (j + 1) * length), weight: w }));
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
 * Every element is a float64 sum of the contributions, each multiplied by
 * its share of the total weight (`wᵣ / Σ w`, computed once in float64),
 * added left to right in the order given (zero weights skipped) and rounded
 * once to float32. All all-reduce algorithms of this
 * library use this function, so they agree bit for bit; with one
 * contribution the result equals its data exactly.
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
  const start = options.start ?? 0;
  const end = options.end ?? length;
  const out = options.out ?? new Float32Array(length);
  // Up to four contributions are summed in one pass, in registers, straight into `out`; more
  // go through a float64 accumulator, one contribution per further pass. Both add left to
  // right, in rank order.
  sumTerms(averagedTerms(contributions), { out, start, end });
  return out;
}

/**
 * `out[i] = Σₖ wₖ·xₖ[i]` over `terms` (see {@linkcode averagedTerms}), for
 * `i` in `[start, end)`: float64 products added left to right, rounded once
 * to float32. {@linkcode weightedAverage}'s loop, for callers that hold the
 * terms already.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sumTerms } from "./all_reduce.ts";
 *
 * const out = new Float32Array(2);
 * sumTerms([{ data: new Float32Array([1, 2]), weight: 0.5 }, { data: new Float32Array([3, 4]), weight: 0.5 }], { out, start: 0, end: 2 });
 * assert.deepEqual([...out], [2, 3]);
 * ```
 */
export function sumTerms(
  terms: readonly Contribution[],
  into: { out: Float32Array; start: number; end: number },
): void {
  const { out, start, end } = into;
  if (terms.length <= 4) {
    sumUpToFour(terms, { target: out, start, end });
    return;
  }
  const sum = new Float64Array(out.length);
  sumUpToFour(terms.slice(0, 4), { target: sum, start, end });
  for (const { data, weight } of terms.slice(4)) {
    for (let i = start; i < end; i++) sum[i] += weight * data[i];
  }
  for (let i = start; i < end; i++) out[i] = sum[i];
}

/**
 * The terms of {@linkcode weightedAverage}'s sums: the contributions of
 * non-zero weight, in order, each weight divided by the total once in float64
 * (so the loops only multiply and add: a division per element made the
 * reduction 40% slower). Throws a `RangeError` if the total is not positive.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { averagedTerms } from "./all_reduce.ts";
 *
 * const data = new Float32Array(1);
 * const terms = averagedTerms([{ data, weight: 3 }, { data, weight: 0 }, { data, weight: 1 }]);
 * assert.deepEqual(terms.map((t) => t.weight), [0.75, 0.25]);
 * ```
 */
export function averagedTerms(contributions: readonly Contribution[]): Contribution[] {
  const total = contributions.reduce((sum, c) => sum + c.weight, 0);
  if (!(total > 0)) throw new RangeError(`total weight must be positive, got ${total}`);
  return contributions.filter((c) => c.weight !== 0)
    .map(({ data, weight }) => ({ data, weight: weight / total }));
}

/** `target[i] = w₀x₀[i] + w₁x₁[i] + …` for one to four contributions. */
function sumUpToFour(
  parts: readonly Contribution[],
  into: { target: Float32Array | Float64Array; start: number; end: number },
): void {
  const { target, start, end } = into;
  const [a, b, c, d] = parts;
  switch (parts.length) {
    case 1: {
      const [xa, wa] = [a.data, a.weight];
      for (let i = start; i < end; i++) target[i] = wa * xa[i];
      break;
    }
    case 2: {
      const [xa, wa, xb, wb] = [a.data, a.weight, b.data, b.weight];
      for (let i = start; i < end; i++) target[i] = wa * xa[i] + wb * xb[i];
      break;
    }
    case 3: {
      const [xa, wa, xb, wb, xc, wc] = [a.data, a.weight, b.data, b.weight, c.data, c.weight];
      for (let i = start; i < end; i++) {
        target[i] = wa * xa[i] + wb * xb[i] + wc * xc[i];
      }
      break;
    }
    case 4: {
      const [xa, wa, xb, wb] = [a.data, a.weight, b.data, b.weight];
      const [xc, wc, xd, wd] = [c.data, c.weight, d.data, d.weight];
      for (let i = start; i < end; i++) {
        target[i] = wa * xa[i] + wb * xb[i] + wc * xc[i] + wd * xd[i];
      }
      break;
    }
    default:
      throw new RangeError(`sumUpToFour takes 1 to 4 contributions, got ${parts.length}`);
  }
}
