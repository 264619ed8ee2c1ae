/**
 * Fashion-MNIST: finding, downloading, verifying and decoding the four files.
 *
 * @module
 */

import { join } from "node:path";
import { DataError } from "../errors.ts";
import { parseIdxImages, parseIdxLabels, readIdxFile } from "./idx.ts";
import { checkSplits, type Dataset } from "./dataset.ts";
import {
  cacheDirOf,
  type DatasetDownloadOptions,
  differingFromOfficial,
  downloadInto,
  type FileSpec,
  isFile,
  readEnv,
} from "./files.ts";

export type { Dataset } from "./dataset.ts";
export type { FileSpec } from "./files.ts";

/**
 * The ten Fashion-MNIST classes, indexed by label.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FASHION_MNIST_CLASSES } from "./fashion_mnist.ts";
 *
 * assert.equal(FASHION_MNIST_CLASSES[9], "Ankle boot");
 * ```
 */
export const FASHION_MNIST_CLASSES: readonly string[] = Object.freeze([
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
]);

/**
 * Where the official Fashion-MNIST files are published.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FASHION_MNIST_FILES, FASHION_MNIST_URL } from "./fashion_mnist.ts";
 *
 * const url = new URL(FASHION_MNIST_FILES.testLabels.name, FASHION_MNIST_URL);
 * assert.ok(url.href.endsWith("/t10k-labels-idx1-ubyte.gz"));
 * ```
 */
export const FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";

/**
 * The four official files and their SHA-256 checksums.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FASHION_MNIST_FILES } from "./fashion_mnist.ts";
 *
 * assert.equal(Object.keys(FASHION_MNIST_FILES).length, 4);
 * assert.match(FASHION_MNIST_FILES.trainImages.sha256, /^[0-9a-f]{64}$/);
 * ```
 */
export const FASHION_MNIST_FILES: Readonly<
  Record<"trainImages" | "trainLabels" | "testImages" | "testLabels", FileSpec>
> = Object.freeze({
  trainImages: {
    name: "train-images-idx3-ubyte.gz",
    sha256: "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
  },
  trainLabels: {
    name: "train-labels-idx1-ubyte.gz",
    sha256: "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
  },
  testImages: {
    name: "t10k-images-idx3-ubyte.gz",
    sha256: "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
  },
  testLabels: {
    name: "t10k-labels-idx1-ubyte.gz",
    sha256: "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
  },
});

/** Options for {@linkcode loadFashionMNIST}. */
export interface LoadFashionMnistOptions extends DatasetDownloadOptions {
  /**
   * Directory holding the four files (gzipped as published, or unpacked
   * without `.gz`). Defaults to `$FASHION_MNIST_DIR`; when neither is set the
   * files are looked for in, and downloaded to, `cacheDir`.
   */
  dataDir?: string;
}

/**
 * Loads the Fashion-MNIST training (60,000) and test (10,000) sets.
 *
 * Looks in `dataDir` (or `$FASHION_MNIST_DIR`) when given; otherwise in the
 * cache directory, downloading missing files from the official location with
 * SHA-256 verification. Gzipped files are checked against the official
 * SHA-256 (each file once per identity, remembered in the cache directory):
 * a cached file that differs is refused; a file of `dataDir` that differs is
 * used, with a note on stderr (unless `quiet`). Every failure is a
 * {@linkcode DataError} with one line naming the file and what is wrong, or
 * where to put the files.
 *
 * @example
 * ```ts ignore
 * import { FASHION_MNIST_CLASSES, loadFashionMNIST } from "./fashion_mnist.ts";
 *
 * const { train, test } = await loadFashionMNIST({ dataDir: "./data/fashion-mnist" });
 * console.log(train.count, test.count, FASHION_MNIST_CLASSES[train.labels[0]]);
 * ```
 */
export async function loadFashionMNIST(
  options: LoadFashionMnistOptions = {},
): Promise<{ train: Dataset; test: Dataset }> {
  const files = FASHION_MNIST_FILES;
  const localDir = options.dataDir ?? readEnv("FASHION_MNIST_DIR");
  const paths = localDir === undefined
    ? await ensureCached(options)
    : await findLocal(localDir, options.dataDir === undefined ? "FASHION_MNIST_DIR" : "data dir");
  const train = await readSplit(paths.trainImages, paths.trainLabels);
  const test = await readSplit(paths.testImages, paths.testLabels);
  checkSplits({ train, test }, {
    names: { train: files.trainImages.name, test: files.testImages.name },
    numClasses: FASHION_MNIST_CLASSES.length,
  });
  const differing = await differingFromOfficial(
    entries().map(([key, spec]) => ({ path: paths[key], spec })),
    {
      cacheDir: options.cacheDir ?? defaultCacheDir(),
      create: options.cacheDir === undefined, // the default cache is ours to create; a given one is not
      maxBytes: 64 * 2 ** 20, // the official files are 30 MB together
    },
  );
  if (differing.length > 0 && localDir === undefined) {
    throw new DataError(
      `${differing.join(", ")} in the download cache differ from the official files ` +
        `(SHA-256): delete them to download them again`,
    );
  }
  if (differing.length > 0 && !options.quiet) {
    console.error(
      `note: ${differing.join(", ")} differ from the official Fashion-MNIST files ` +
        `(SHA-256); using them as given`,
    );
  }
  return { train, test };
}

/**
 * The default download cache: `$XDG_CACHE_HOME/deno-ddp/fashion-mnist`, or
 * `~/.cache/deno-ddp/fashion-mnist`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { defaultCacheDir } from "./fashion_mnist.ts";
 *
 * assert.ok(defaultCacheDir().endsWith("fashion-mnist"));
 * ```
 */
export function defaultCacheDir(): string {
  return cacheDirOf("fashion-mnist");
}

type FilePaths = Record<keyof typeof FASHION_MNIST_FILES, string>;

async function findLocal(dir: string, what: string): Promise<FilePaths> {
  const stat = await Deno.stat(dir).catch(() => null);
  if (stat === null || !stat.isDirectory) {
    throw new DataError(`${what} ${dir} is not a directory; ${whereToPut(dir)}`);
  }
  const paths: Partial<FilePaths> = {};
  for (const [key, spec] of entries()) {
    const candidates = [join(dir, spec.name), join(dir, spec.name.replace(/\.gz$/, ""))];
    for (const candidate of candidates) {
      if (await isFile(candidate)) {
        paths[key] = candidate;
        break;
      }
    }
    if (paths[key] === undefined) {
      throw new DataError(`${dir} has no ${spec.name}; ${whereToPut(dir)}`);
    }
  }
  return paths as FilePaths;
}

async function ensureCached(options: LoadFashionMnistOptions): Promise<FilePaths> {
  const dir = options.cacheDir ?? defaultCacheDir();
  const baseUrl = options.baseUrl ?? FASHION_MNIST_URL;
  const paths: Partial<FilePaths> = {};
  for (const [key, spec] of entries()) {
    const path = join(dir, spec.name);
    paths[key] = path;
    if (await isFile(path)) continue;
    if (options.download === false) {
      throw new DataError(`${path} is missing and downloading is off; ${whereToPut(dir, true)}`);
    }
    await downloadInto(dir, spec, { ...options, baseUrl, hint: whereToPut(dir, true) });
  }
  return paths as FilePaths;
}

async function readSplit(imagesPath: string, labelsPath: string): Promise<Dataset> {
  const images = parseIdxImages(await readIdxFile(imagesPath, { kind: "images" }), {
    name: imagesPath,
  });
  const labels = parseIdxLabels(await readIdxFile(labelsPath, { kind: "labels" }), {
    name: labelsPath,
    numClasses: FASHION_MNIST_CLASSES.length,
  });
  if (images.count !== labels.length) {
    throw new DataError(
      `${imagesPath} has ${images.count} images but ${labelsPath} has ${labels.length} labels`,
    );
  }
  return {
    images: images.pixels,
    labels,
    count: images.count,
    rows: images.rows,
    cols: images.cols,
  };
}

function whereToPut(dir: string, isCache = false): string {
  const names = entries().map(([, spec]) => spec.name).join(", ");
  const put = `put the four Fashion-MNIST files (${names}) from ${FASHION_MNIST_URL} into ${dir}`;
  return isCache
    ? `${put}, or pass --data-dir (or FASHION_MNIST_DIR) naming a directory that holds them`
    : put;
}

function entries(): [keyof typeof FASHION_MNIST_FILES, FileSpec][] {
  return Object.entries(FASHION_MNIST_FILES) as [keyof typeof FASHION_MNIST_FILES, FileSpec][];
}
