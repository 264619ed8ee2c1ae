/**
 * Summaries of repeated measurements, and synthetic data for benchmarks.
 *
 * @module
 */

import type { Dataset } from "../data/dataset.ts";
import { mulberry32 } from "../util/random.ts";

/** Median and spread of repeated measurements. */
export interface Summary {
  /** The median. */
  median: number;
  /** The smallest measurement. */
  min: number;
  /** The largest measurement. */
  max: number;
  /** Number of measurements. */
  count: number;
}

/**
 * Median, minimum and maximum of `values` (which must not be empty).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { summarize } from "./stats.ts";
 *
 * assert.deepEqual(summarize([3, 1, 2, 10]), { median: 2.5, min: 1, max: 10, count: 4 });
 * ```
 */
export function summarize(values: readonly number[]): Summary {
  if (values.length === 0) throw new RangeError("no measurements to summarize");
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1
    ? sorted[middle]
    : (sorted[middle - 1] + sorted[middle]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1], count: sorted.length };
}

/**
 * A data set of `count` random 28×28 images with random labels, for
 * measuring speed without the real data.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { syntheticDataset } from "./stats.ts";
 *
 * const data = syntheticDataset(8, { seed: 1 });
 * assert.equal(data.images.length, 8 * 784);
 * assert.ok(data.labels.every((label) => label < 10));
 * ```
 */
export function syntheticDataset(count: number, options: { seed?: number } = {}): Dataset {
  const next = mulberry32(options.seed ?? 0);
  const images = new Uint8Array(count * 784);
  for (let i = 0; i < images.length; i++) images[i] = next() & 0xff;
  const labels = Uint8Array.from({ length: count }, () => next() % 10);
  return { images, labels, count, rows: 28, cols: 28 };
}
