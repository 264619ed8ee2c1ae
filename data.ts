/**
 * The data sets `train()` reads: Fashion-MNIST or CIFAR-10 by name (downloaded
 * once, SHA-256-verified, cached), or any image-classification set in memory as a
 * {@linkcode Dataset} (`data: { train, test }`).
 *
 * @example Fashion-MNIST from a directory, its first training image's label
 * ```ts ignore
 * import { FASHION_MNIST_CLASSES, loadFashionMNIST } from "./data.ts";
 *
 * const { train } = await loadFashionMNIST({ dataDir: "data/fashion-mnist", download: false });
 * console.log(train.count, FASHION_MNIST_CLASSES[train.labels[0]]); // 60000 "Ankle boot"
 * ```
 *
 * @module
 */

export type { Dataset, Normalization } from "./lib/data/dataset.ts";
export {
  defaultCacheDir,
  FASHION_MNIST_CLASSES,
  loadFashionMNIST,
  type LoadFashionMnistOptions,
} from "./lib/data/fashion_mnist.ts";
export {
  CIFAR10_ARCHIVE,
  CIFAR10_CLASSES,
  loadCIFAR10,
  type LoadCifar10Options,
} from "./lib/data/cifar10.ts";
export type { DatasetName } from "./lib/data/registry.ts";
export type { DatasetDownloadOptions, FileSpec } from "./lib/data/files.ts";
