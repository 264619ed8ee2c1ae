/**
 * CIFAR-10, binary version: finding, downloading, verifying and decoding it.
 *
 * The official archive `cifar-10-binary.tar.gz` holds
 * `cifar-10-batches-bin/data_batch_1.bin` … `data_batch_5.bin` (training) and
 * `test_batch.bin`. Each of these is a run of 3,073-byte records: a label
 * byte (0–9), then 32×32 red, 32×32 green and 32×32 blue bytes, row-major.
 * They decode into a {@linkcode Dataset} of 32×32×3 bytes with the channels
 * last, as every data set here is held.
 *
 * Reading is bounded: the archive is read as a stream and never more than
 * {@linkcode CIFAR10_MAX_TAR_BYTES} unpacked; a batch file is at most
 * 10,000 records, and its size must be a whole number of records; every
 * label is checked.
 *
 * @module
 */

import { basename, join } from "node:path";
import { DataError } from "../errors.ts";
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

/**
 * The ten CIFAR-10 classes, indexed by label.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { CIFAR10_CLASSES } from "./cifar10.ts";
 *
 * assert.equal(CIFAR10_CLASSES[9], "truck");
 * ```
 */
export const CIFAR10_CLASSES: readonly string[] = Object.freeze([
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
]);

/** Where the official archive is published. */
export const CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/";

/**
 * The official archive (binary version), its SHA-256 and its size in bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { CIFAR10_ARCHIVE } from "./cifar10.ts";
 *
 * assert.equal(CIFAR10_ARCHIVE.name, "cifar-10-binary.tar.gz");
 * assert.equal(CIFAR10_ARCHIVE.bytes, 170_052_171);
 * ```
 */
export const CIFAR10_ARCHIVE: Readonly<FileSpec & { bytes: number }> = Object.freeze({
  name: "cifar-10-binary.tar.gz",
  sha256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
  bytes: 170_052_171,
});

/** The batch files: five of training examples, one of test examples. */
const TRAIN_BATCHES = [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`);
const TEST_BATCH = "test_batch.bin";
/** The folder the archive unpacks into. */
const FOLDER = "cifar-10-batches-bin";

/** Bytes of one record: a label and a 32×32×3 image. */
export const CIFAR10_RECORD_BYTES = 1 + 32 * 32 * 3;
/** Records in one official batch file: the most a batch file may hold. */
const MAX_RECORDS = 10_000;
/** The most bytes read out of an archive (the official one unpacks to about 184 MB). */
export const CIFAR10_MAX_TAR_BYTES = 256 * 2 ** 20;

/** Options for {@linkcode loadCIFAR10}. */
export interface LoadCifar10Options extends DatasetDownloadOptions {
  /**
   * Directory holding the data: the archive `cifar-10-binary.tar.gz`, or its
   * unpacked `cifar-10-batches-bin/` folder, or the six `.bin` files.
   * Defaults to `$CIFAR10_DIR`; when neither is set the archive is looked for
   * in, and downloaded to, `cacheDir`.
   */
  dataDir?: string;
}

/**
 * Loads the CIFAR-10 training (50,000) and test (10,000) sets.
 *
 * Looks in `dataDir` (or `$CIFAR10_DIR`) when given; otherwise in the cache
 * directory, downloading the archive from the official location with
 * SHA-256 verification. An archive is checked against the official SHA-256
 * (once per file identity): a cached one that differs is refused; one of
 * `dataDir` that differs is used, with a note on stderr (unless `quiet`).
 * Every failure is a {@linkcode DataError} with one line naming the file and
 * what is wrong, or where to put the data.
 *
 * @example
 * ```ts ignore
 * import { CIFAR10_CLASSES, loadCIFAR10 } from "./cifar10.ts";
 *
 * const { train, test } = await loadCIFAR10();
 * console.log(train.count, test.count, CIFAR10_CLASSES[train.labels[0]]);
 * ```
 */
export async function loadCIFAR10(
  options: LoadCifar10Options = {},
): Promise<{ train: Dataset; test: Dataset }> {
  const localDir = options.dataDir ?? readEnv("CIFAR10_DIR");
  const cacheDir = options.cacheDir ?? cacheDirOf("cifar-10");
  let files: Map<string, Uint8Array>;
  if (localDir !== undefined) {
    const what = options.dataDir === undefined ? "CIFAR10_DIR" : "data dir";
    const stat = await Deno.stat(localDir).catch(() => null);
    if (stat === null || !stat.isDirectory) {
      throw new DataError(`${what} ${localDir} is not a directory; ${whereToPut(localDir)}`);
    }
    files = await readLocal(localDir, { cacheDir, quiet: options.quiet });
  } else {
    const archive = await ensureCached(cacheDir, options);
    const differing = await differingFromOfficial([{ path: archive, spec: CIFAR10_ARCHIVE }], {
      cacheDir,
      create: options.cacheDir === undefined,
      maxBytes: CIFAR10_ARCHIVE.bytes,
    });
    if (differing.length > 0) {
      throw new DataError(
        `${archive} in the download cache differs from the official archive (SHA-256): ` +
          `delete it to download it again`,
      );
    }
    files = await readArchive(archive);
  }
  const split = (names: string[]) => decodeBatches(names.map((name) => [name, files.get(name)!]));
  const train = split(TRAIN_BATCHES);
  const test = split([TEST_BATCH]);
  checkSplits({ train, test }, {
    names: { train: TRAIN_BATCHES.join(", "), test: TEST_BATCH },
    numClasses: CIFAR10_CLASSES.length,
  });
  return { train, test };
}

/** The six batch files of `dir`: loose, in the unpacked folder, or in the archive. */
async function readLocal(
  dir: string,
  options: { cacheDir: string; quiet?: boolean },
): Promise<Map<string, Uint8Array>> {
  for (const folder of [dir, join(dir, FOLDER)]) {
    const paths = [...TRAIN_BATCHES, TEST_BATCH].map((name) => join(folder, name));
    const present = await Promise.all(paths.map(isFile));
    if (present.every((p) => p)) {
      const files = new Map<string, Uint8Array>();
      for (const path of paths) files.set(basename(path), await readBatchFile(path));
      return files;
    }
    if (present.some((p) => p)) {
      const missing = paths.filter((_, i) => !present[i]).map((p) => basename(p));
      throw new DataError(`${folder} has no ${missing.join(", ")}; ${whereToPut(dir)}`);
    }
  }
  const archive = join(dir, CIFAR10_ARCHIVE.name);
  if (!await isFile(archive)) {
    throw new DataError(
      `${dir} has neither ${CIFAR10_ARCHIVE.name} nor the batch files; ${whereToPut(dir)}`,
    );
  }
  const differing = await differingFromOfficial([{ path: archive, spec: CIFAR10_ARCHIVE }], {
    cacheDir: options.cacheDir,
    create: false,
    maxBytes: CIFAR10_ARCHIVE.bytes,
  });
  if (differing.length > 0 && !options.quiet) {
    console.error(
      `note: ${archive} differs from the official CIFAR-10 archive (SHA-256); using it as given`,
    );
  }
  return await readArchive(archive);
}

/** A batch file, checked for size before it is read. */
async function readBatchFile(path: string): Promise<Uint8Array> {
  const info = await Deno.stat(path);
  checkBatchSize(path, info.size);
  return await Deno.readFile(path);
}

function checkBatchSize(name: string, bytes: number): void {
  if (bytes === 0 || bytes % CIFAR10_RECORD_BYTES !== 0) {
    throw new DataError(
      `${name}: ${bytes} bytes is not a whole number of ${CIFAR10_RECORD_BYTES}-byte records`,
    );
  }
  if (bytes > MAX_RECORDS * CIFAR10_RECORD_BYTES) {
    throw new DataError(
      `${name}: ${
        bytes / CIFAR10_RECORD_BYTES
      } records, more than the ${MAX_RECORDS} of a batch file`,
    );
  }
}

/**
 * The six batch files out of a `.tar.gz` archive, read as a stream: other
 * entries are skipped, a batch entry's size is checked before it is kept,
 * and reading stops with an error past {@linkcode CIFAR10_MAX_TAR_BYTES}.
 */
async function readArchive(path: string): Promise<Map<string, Uint8Array>> {
  const wanted = new Set([...TRAIN_BATCHES, TEST_BATCH]);
  const files = new Map<string, Uint8Array>();
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (error) {
    throw new DataError(`cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
  const reader = new ByteReader(
    file.readable.pipeThrough(new DecompressionStream("gzip")).getReader(),
    { path, limit: CIFAR10_MAX_TAR_BYTES },
  );
  try {
    for (;;) {
      const header = await reader.read(512);
      if (header.length < 512 || header.every((b) => b === 0)) break; // end of archive
      const name = tarString(header, 0, 100);
      const size = parseInt(tarString(header, 124, 12).trim() || "0", 8);
      if (!Number.isSafeInteger(size) || size < 0) {
        throw new DataError(`${path}: entry ${name} has no valid size`);
      }
      const type = String.fromCharCode(header[156] || 48); // "0" for a file
      const padded = Math.ceil(size / 512) * 512;
      const base = basename(name);
      if (type === "0" && wanted.has(base) && !files.has(base)) {
        checkBatchSize(`${path}: ${name}`, size);
        const bytes = await reader.read(size);
        if (bytes.length < size) throw new DataError(`${path}: ${name} is cut short`);
        files.set(base, bytes);
        await reader.skip(padded - size);
      } else {
        await reader.skip(padded);
      }
      if (files.size === wanted.size) break;
    }
  } catch (error) {
    if (error instanceof DataError) throw error;
    throw new DataError(`${path}: not a valid .tar.gz archive (${(error as Error).message})`, {
      cause: error,
    });
  } finally {
    await reader.cancel();
  }
  const missing = [...wanted].filter((name) => !files.has(name));
  if (missing.length > 0) {
    throw new DataError(`${path} holds no ${missing.join(", ")}: it is not CIFAR-10's archive`);
  }
  return files;
}

/** Exact-length reads over a byte stream, with a cap on the bytes it will read in all. */
class ByteReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #pending: Uint8Array = new Uint8Array(0);
  #total = 0;
  #path: string;
  #limit: number;

  constructor(
    reader: ReadableStreamDefaultReader<Uint8Array>,
    options: { path: string; limit: number },
  ) {
    this.#reader = reader;
    this.#path = options.path;
    this.#limit = options.limit;
  }

  /** The next `n` bytes (fewer at the end of the stream). */
  async read(n: number): Promise<Uint8Array> {
    this.#account(n);
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      if (this.#pending.length === 0) {
        const { done, value } = await this.#reader.read();
        if (done) return out.subarray(0, filled);
        this.#pending = value;
      }
      const take = Math.min(n - filled, this.#pending.length);
      out.set(this.#pending.subarray(0, take), filled);
      this.#pending = this.#pending.subarray(take);
      filled += take;
    }
    return out;
  }

  /** Skips `n` bytes without keeping them. */
  async skip(n: number): Promise<void> {
    this.#account(n);
    let left = n;
    while (left > 0) {
      if (this.#pending.length === 0) {
        const { done, value } = await this.#reader.read();
        if (done) return;
        this.#pending = value;
      }
      const take = Math.min(left, this.#pending.length);
      this.#pending = this.#pending.subarray(take);
      left -= take;
    }
  }

  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
  }

  #account(n: number): void {
    this.#total += n;
    if (this.#total > this.#limit) {
      throw new DataError(
        `${this.#path}: unpacks to more than ${this.#limit} bytes; CIFAR-10's archive unpacks to about 184 MB`,
      );
    }
  }
}

/** A NUL-terminated ASCII field of a tar header. */
function tarString(header: Uint8Array, offset: number, length: number): string {
  const field = header.subarray(offset, offset + length);
  const end = field.indexOf(0);
  return new TextDecoder().decode(end < 0 ? field : field.subarray(0, end));
}

/**
 * Records of batch files, in order, decoded into one split: planes (all red,
 * all green, all blue) become pixels with their channels last.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { CIFAR10_RECORD_BYTES, decodeBatches } from "./cifar10.ts";
 *
 * const record = new Uint8Array(CIFAR10_RECORD_BYTES);
 * record[0] = 7; // label
 * record[1] = 10; // red of pixel (0, 0)
 * record[1 + 1024] = 20; // its green
 * record[1 + 2048] = 30; // its blue
 * const split = decodeBatches([["data_batch_1.bin", record]]);
 * assert.deepEqual([...split.images.subarray(0, 3)], [10, 20, 30]);
 * assert.deepEqual([split.count, split.labels[0], split.channels], [1, 7, 3]);
 * ```
 */
export function decodeBatches(batches: readonly [string, Uint8Array][]): Dataset {
  for (const [name, bytes] of batches) checkBatchSize(name, bytes.length);
  const count = batches.reduce((sum, [, bytes]) => sum + bytes.length / CIFAR10_RECORD_BYTES, 0);
  const images = new Uint8Array(count * 3072);
  const labels = new Uint8Array(count);
  let n = 0;
  for (const [name, bytes] of batches) {
    for (let at = 0; at < bytes.length; at += CIFAR10_RECORD_BYTES, n++) {
      const label = bytes[at];
      if (label >= CIFAR10_CLASSES.length) {
        throw new DataError(
          `${name}: record ${at / CIFAR10_RECORD_BYTES} has label ${label}, not one of 0..9`,
        );
      }
      labels[n] = label;
      const out = n * 3072;
      for (let p = 0; p < 1024; p++) {
        images[out + 3 * p] = bytes[at + 1 + p];
        images[out + 3 * p + 1] = bytes[at + 1 + 1024 + p];
        images[out + 3 * p + 2] = bytes[at + 1 + 2048 + p];
      }
    }
  }
  return { images, labels, count, rows: 32, cols: 32, channels: 3 };
}

async function ensureCached(
  dir: string,
  options: LoadCifar10Options,
): Promise<string> {
  const path = join(dir, CIFAR10_ARCHIVE.name);
  if (await isFile(path)) return path;
  if (options.download === false) {
    throw new DataError(`${path} is missing and downloading is off; ${whereToPut(dir, true)}`);
  }
  return await downloadInto(dir, CIFAR10_ARCHIVE, {
    ...options,
    baseUrl: options.baseUrl ?? CIFAR10_URL,
    maxBytes: CIFAR10_ARCHIVE.bytes,
    hint: whereToPut(dir, true),
  });
}

function whereToPut(dir: string, isCache = false): string {
  const put = `put ${CIFAR10_ARCHIVE.name} from ${CIFAR10_URL} (or its unpacked ${FOLDER} ` +
    `folder) into ${dir}`;
  return isCache
    ? `${put}, or pass --data-dir (or CIFAR10_DIR) naming a directory that holds it`
    : put;
}
