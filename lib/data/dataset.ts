/**
 * An image-classification data set in memory — any size, shape and channel
 * count, uint8 or float32 pixels — and the checks every split gets before a
 * run uses it.
 *
 * @module
 */

import { DataError, describeValue } from "../errors.ts";

/** A split of an image-classification data set held in memory. */
export interface Dataset {
  /**
   * `count × rows × cols × channels` values, example by example, each image
   * row-major with channels last (NHWC): bytes 0 to 255, or float32 values
   * (finite; used as given, before any normalisation).
   */
  images: Uint8Array | Float32Array;
  /** One label per image, from 0 to the model's number of classes − 1. */
  labels: Uint8Array;
  /** Number of examples. */
  count: number;
  /** Image height in pixels. */
  rows: number;
  /** Image width in pixels. */
  cols: number;
  /** Channels per pixel. Default 1. */
  channels?: number;
}

/** Per-channel normalisation of the model input, after bytes are scaled to [0, 1]. */
export interface Normalization {
  /** Subtracted from each channel. */
  mean: readonly number[];
  /** Each channel is then divided by it. */
  std: readonly number[];
}

/**
 * Values per example of `dataset`: `rows × cols × channels`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { exampleSize } from "./dataset.ts";
 *
 * assert.equal(exampleSize({ rows: 32, cols: 32, channels: 3 }), 3072);
 * ```
 */
export function exampleSize(dataset: Pick<Dataset, "rows" | "cols" | "channels">): number {
  return dataset.rows * dataset.cols * (dataset.channels ?? 1);
}

/**
 * Checks that `dataset` is a usable split: a positive count of
 * `rows × cols × channels` images (uint8, or finite float32) with one uint8
 * label below `numClasses` (default 256) each; throws a
 * {@linkcode DataError} naming `name` and the first problem otherwise.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkDataset } from "./dataset.ts";
 *
 * const images = new Uint8Array(2 * 4), labels = new Uint8Array([3, 200]);
 * assert.throws(
 *   () => checkDataset({ images, labels, count: 2, rows: 2, cols: 2 }, { name: "train", numClasses: 10 }),
 *   /^DataError: train: label 200 of example 1 is outside 0\.\.9$/,
 * );
 * ```
 */
export function checkDataset(
  dataset: Dataset,
  options: { name: string; numClasses?: number },
): void {
  const fail = (reason: string) => new DataError(`${options.name}: ${reason}`);
  const numClasses = options.numClasses ?? 256;
  if (typeof dataset !== "object" || dataset === null) throw fail("not a data set");
  const { images, labels, count, rows, cols } = dataset;
  const channels = dataset.channels ?? 1;
  for (const [key, value] of Object.entries({ count, rows, cols, channels })) {
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1) {
      throw fail(`${key} must be a positive integer, got ${describeValue(value)}`);
    }
  }
  if (!(images instanceof Uint8Array || images instanceof Float32Array)) {
    throw fail("images must be a Uint8Array or a Float32Array");
  }
  if (!(labels instanceof Uint8Array)) throw fail("labels must be a Uint8Array");
  const size = exampleSize(dataset);
  if (images.length !== count * size) {
    const shape = channels === 1 ? `${rows}×${cols}` : `${rows}×${cols}×${channels}`;
    throw fail(
      `${images.length} image values, but ${count} images of ${shape} need ${count * size}`,
    );
  }
  if (images instanceof Float32Array) {
    const bad = images.findIndex((value) => !Number.isFinite(value));
    if (bad >= 0) throw fail(`image value ${bad} is ${images[bad]}`);
  }
  if (labels.length !== count) throw fail(`${labels.length} labels for ${count} images`);
  const bad = labels.findIndex((label) => label >= numClasses);
  if (bad >= 0) {
    throw fail(`label ${labels[bad]} of example ${bad} is outside 0..${numClasses - 1}`);
  }
}

/**
 * Checks a training and a test split with {@linkcode checkDataset} and that
 * their images have one shape and type; errors name each split by `names`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkSplits } from "./dataset.ts";
 *
 * const split = (side: number) => ({
 *   images: new Uint8Array(side * side), labels: new Uint8Array(1), count: 1, rows: side, cols: side,
 * });
 * assert.throws(
 *   () => checkSplits({ train: split(28), test: split(32) }, { names: { train: "a", test: "b" } }),
 *   /^DataError: a has 28×28×1 uint8 images but b has 32×32×1 uint8$/,
 * );
 * ```
 */
export function checkSplits(
  data: { train: Dataset; test: Dataset },
  options: { names: { train: string; test: string }; numClasses?: number },
): void {
  const { train, test } = data;
  const { names, numClasses } = options;
  checkDataset(train, { name: names.train, numClasses });
  checkDataset(test, { name: names.test, numClasses });
  const describe = (d: Dataset) =>
    `${d.rows}×${d.cols}×${d.channels ?? 1} ${
      d.images instanceof Uint8Array ? "uint8" : "float32"
    }`;
  if (describe(train) !== describe(test)) {
    throw new DataError(
      `${names.train} has ${describe(train)} images but ${names.test} has ${describe(test)}`,
    );
  }
}

/**
 * Throws a one-line `DataError` unless `data`'s images have the channels
 * `model` takes and its labels are classes the model tells apart.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkDataFitsModel } from "./dataset.ts";
 *
 * const split = { images: new Uint8Array(4), labels: new Uint8Array([3]), count: 1, rows: 2, cols: 2 };
 * const data = { train: split, test: split };
 * assert.throws(() => checkDataFitsModel(data, { inputShape: [2, 2, 1], numClasses: 3 }), /label 3/);
 * ```
 */
export function checkDataFitsModel(
  data: { train: Dataset; test: Dataset },
  model: { inputShape: readonly [number, number, number]; numClasses: number },
): void {
  const channels = data.train.channels ?? 1;
  if (channels !== model.inputShape[2]) {
    throw new DataError(
      `the model takes ${
        model.inputShape[2]
      }-channel images but the data has ${channels} channel(s)`,
    );
  }
  for (const [name, split] of [["training", data.train], ["test", data.test]] as const) {
    let max = 0;
    for (const label of split.labels) max = label > max ? label : max;
    if (max >= model.numClasses) {
      throw new DataError(
        `the ${name} data has label ${max} but the model tells ${model.numClasses} classes apart (0..${
          model.numClasses - 1
        })`,
      );
    }
  }
}

/**
 * The first `limit` examples of `dataset` (all when undefined), copied into
 * shared memory that every worker thread sees without a copy of its own.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { shareDataset } from "./dataset.ts";
 *
 * const split = { images: new Uint8Array(12), labels: new Uint8Array(3), count: 3, rows: 2, cols: 2 };
 * const shared = shareDataset(split, 2);
 * assert.ok(shared.count === 2 && shared.images.buffer instanceof SharedArrayBuffer);
 * ```
 */
export function shareDataset(dataset: Dataset, limit: number | undefined): Dataset {
  const count = Math.min(limit ?? dataset.count, dataset.count);
  const values = count * exampleSize(dataset);
  const images = dataset.images instanceof Float32Array
    ? new Float32Array(new SharedArrayBuffer(values * 4))
    : new Uint8Array(new SharedArrayBuffer(values));
  images.set(dataset.images.subarray(0, values));
  const labels = new Uint8Array(new SharedArrayBuffer(count));
  labels.set(dataset.labels.subarray(0, count));
  const { rows, cols, channels } = dataset;
  return { images, labels, count, rows, cols, channels: channels ?? 1 };
}
