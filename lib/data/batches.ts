/**
 * Splitting each global batch across replicas, and gathering its examples.
 *
 * With {@linkcode DistributedSampler}, replica `r` holds positions
 * `r, r + W, r + 2W, …` of one padded order shared by all `W` replicas. Global
 * batch `s` is positions `[sB, (s+1)B)` of that order, so its share on replica
 * `r` is the replica's own indices whose positions fall in that range. The
 * global batches are therefore the same whatever the number of replicas, and
 * the shares of one batch differ in size by at most one.
 *
 * @module
 */

import { type Dataset, exampleSize } from "./dataset.ts";

/** Options for {@linkcode batchShard} and {@linkcode stepsPerEpoch}. */
export interface BatchShardOptions {
  /** This replica's rank. */
  rank: number;
  /** Number of replicas. */
  worldSize: number;
  /** Global batch size, summed over all replicas. */
  batchSize: number;
}

/**
 * Number of global batches in one pass over `totalSize` positions (the last
 * may be short).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { stepsPerEpoch } from "./batches.ts";
 *
 * assert.ok(stepsPerEpoch(60000, { batchSize: 128 }) === 469);
 * ```
 */
export function stepsPerEpoch(totalSize: number, options: { batchSize: number }): number {
  return Math.ceil(totalSize / options.batchSize);
}

/**
 * This replica's part of global batch `step`, taken from the replica's own
 * sampler indices (`rankIndices`, the output of `DistributedSampler.indices()`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DistributedSampler } from "./sampler.ts";
 * import { batchShard } from "./batches.ts";
 *
 * const sampler = new DistributedSampler(10, { rank: 1, worldSize: 2, shuffle: false });
 * const shard = batchShard(sampler.indices(), 0, { rank: 1, worldSize: 2, batchSize: 4 });
 * assert.ok(shard.join() === "1,3");
 * ```
 */
export function batchShard(
  rankIndices: readonly number[],
  step: number,
  options: BatchShardOptions,
): number[] {
  const { rank, worldSize, batchSize } = options;
  const first = Math.max(0, Math.ceil((step * batchSize - rank) / worldSize));
  const end = Math.ceil(((step + 1) * batchSize - rank) / worldSize);
  return rankIndices.slice(first, Math.min(end, rankIndices.length));
}

/**
 * Examples gathered from a {@linkcode Dataset}, ready to upload: a small data
 * set of their own, in the order asked for.
 */
export type Batch = Dataset;

/**
 * Copies the examples at `indices` out of `dataset` into one contiguous batch.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gatherBatch } from "./batches.ts";
 *
 * const dataset = {
 *   images: new Uint8Array([1, 1, 2, 2, 3, 3]),
 *   labels: new Uint8Array([7, 8, 9]),
 *   count: 3,
 *   rows: 1,
 *   cols: 2,
 * };
 * const batch = gatherBatch(dataset, [2, 0]);
 * assert.ok(batch.images.join() === "3,3,1,1" && batch.labels.join() === "9,7");
 * ```
 */
export function gatherBatch(dataset: Dataset, indices: readonly number[]): Batch {
  const size = exampleSize(dataset);
  const images = dataset.images instanceof Float32Array
    ? new Float32Array(indices.length * size)
    : new Uint8Array(indices.length * size);
  const labels = new Uint8Array(indices.length);
  indices.forEach((index, i) => {
    images.set(dataset.images.subarray(index * size, (index + 1) * size), i * size);
    labels[i] = dataset.labels[index];
  });
  const { rows, cols, channels } = dataset;
  return { images, labels, count: indices.length, rows, cols, channels: channels ?? 1 };
}
