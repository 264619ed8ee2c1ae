/**
 * The data sets `train()` can load by name, when no `data` is given in
 * memory. A new one is a loader in its own file plus one entry in
 * {@linkcode DATASETS}.
 *
 * @module
 */

import type { Dataset } from "./dataset.ts";
import { FASHION_MNIST_CLASSES, loadFashionMNIST } from "./fashion_mnist.ts";

/** A loadable data set. */
export interface DatasetEntry {
  /** Loads the training and test splits, from `dataDir` or a download cache. */
  load(
    options: { dataDir?: string; download?: boolean; signal?: AbortSignal },
  ): Promise<{ train: Dataset; test: Dataset }>;
  /** Class names, by label. */
  classes: readonly string[];
}

/** Names of the loadable data sets. */
export type DatasetName = "fashion-mnist";

/**
 * The loadable data sets: Fashion-MNIST (d2l's, the default).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DATASETS } from "./registry.ts";
 *
 * assert.equal(DATASETS["fashion-mnist"].classes[9], "Ankle boot");
 * ```
 */
export const DATASETS: Readonly<Record<DatasetName, DatasetEntry>> = {
  "fashion-mnist": { load: (options) => loadFashionMNIST(options), classes: FASHION_MNIST_CLASSES },
};
