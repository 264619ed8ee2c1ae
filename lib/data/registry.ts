/**
 * The data sets `train()` can load by name, when no `data` is given in
 * memory. A new one is a loader in its own file plus one entry in
 * {@linkcode DATASETS}.
 *
 * @module
 */

import type { Dataset } from "./dataset.ts";
import { CIFAR10_CLASSES, loadCIFAR10 } from "./cifar10.ts";
import { FASHION_MNIST_CLASSES, loadFashionMNIST } from "./fashion_mnist.ts";

/** A loadable data set. */
export interface DatasetEntry {
  /** Loads the training and test splits, from `dataDir` or a download cache. */
  load(
    options: { dataDir?: string; download?: boolean; signal?: AbortSignal },
  ): Promise<{ train: Dataset; test: Dataset }>;
  /** Class names, by label. */
  classes: readonly string[];
  /** Channels of its images. */
  channels: number;
}

/** Names of the loadable data sets. */
export type DatasetName = "fashion-mnist" | "cifar10";

/**
 * The loadable data sets: Fashion-MNIST (d2l's, the default; 28×28 grey) and
 * CIFAR-10 (its binary version; 32×32 RGB).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DATASETS } from "./registry.ts";
 *
 * assert.equal(DATASETS["fashion-mnist"].classes[9], "Ankle boot");
 * assert.equal(DATASETS.cifar10.channels, 3);
 * ```
 */
export const DATASETS: Readonly<Record<DatasetName, DatasetEntry>> = {
  "fashion-mnist": {
    load: (options) => loadFashionMNIST(options),
    classes: FASHION_MNIST_CLASSES,
    channels: 1,
  },
  cifar10: { load: (options) => loadCIFAR10(options), classes: CIFAR10_CLASSES, channels: 3 },
};
