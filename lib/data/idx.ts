/**
 * Parser for the IDX format used by MNIST and Fashion-MNIST.
 *
 * An IDX file is a big-endian header (magic number, then one 32-bit size per
 * dimension) followed by the unsigned bytes of the array in row-major order.
 * Image files have magic 2051 and three dimensions (count, rows, cols);
 * label files have magic 2049 and one dimension (count).
 *
 * @module
 */

import { DataError } from "../errors.ts";

/**
 * Magic number of an IDX file holding unsigned-byte images (N×rows×cols).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { IDX_IMAGES_MAGIC } from "./idx.ts";
 *
 * assert.equal(IDX_IMAGES_MAGIC, 0x803);
 * ```
 */
export const IDX_IMAGES_MAGIC = 2051;
/**
 * Magic number of an IDX file holding unsigned-byte labels (N).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { IDX_LABELS_MAGIC } from "./idx.ts";
 *
 * assert.equal(IDX_LABELS_MAGIC, 0x801);
 * ```
 */
export const IDX_LABELS_MAGIC = 2049;

/** Images decoded from an IDX file. */
export interface IdxImages {
  /** Number of images. */
  count: number;
  /** Image height in pixels. */
  rows: number;
  /** Image width in pixels. */
  cols: number;
  /** `count × rows × cols` pixels, row-major, 0 (background) to 255. */
  pixels: Uint8Array;
}

/** Options naming the file in error messages. */
export interface IdxOptions {
  /** File name used in error messages. */
  name?: string;
}

/**
 * Decodes an IDX image file (magic 2051).
 *
 * Throws a {@linkcode DataError} naming the file when the magic number, the
 * dimensions or the byte length are wrong.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseIdxImages } from "./idx.ts";
 *
 * const bytes = new Uint8Array(16 + 2 * 2 * 2);
 * new DataView(bytes.buffer).setUint32(0, 2051);
 * new DataView(bytes.buffer).setUint32(4, 2); // count
 * new DataView(bytes.buffer).setUint32(8, 2); // rows
 * new DataView(bytes.buffer).setUint32(12, 2); // cols
 * const images = parseIdxImages(bytes, { name: "tiny-images" });
 * assert.ok(images.count === 2 && images.pixels.length === 8);
 * ```
 */
export function parseIdxImages(bytes: Uint8Array, options: IdxOptions = {}): IdxImages {
  const name = options.name ?? "IDX images";
  const [count, rows, cols] = readHeader(bytes, IDX_IMAGES_MAGIC, 3, name);
  const pixels = bytes.subarray(16, 16 + count * rows * cols);
  return { count, rows, cols, pixels };
}

/**
 * Decodes an IDX label file (magic 2049) whose labels must lie in
 * `[0, numClasses)`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseIdxLabels } from "./idx.ts";
 *
 * const bytes = new Uint8Array([0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 9]);
 * const labels = parseIdxLabels(bytes, { name: "tiny-labels", numClasses: 10 });
 * assert.ok(labels.join() === "7,0,9");
 * ```
 */
export function parseIdxLabels(
  bytes: Uint8Array,
  options: IdxOptions & { numClasses?: number } = {},
): Uint8Array {
  const name = options.name ?? "IDX labels";
  const [count] = readHeader(bytes, IDX_LABELS_MAGIC, 1, name);
  const labels = bytes.subarray(8, 8 + count);
  const numClasses = options.numClasses ?? 256;
  const bad = labels.findIndex((label) => label >= numClasses);
  if (bad >= 0) {
    throw new DataError(
      `${name}: label ${labels[bad]} at index ${bad} is outside 0..${numClasses - 1}`,
    );
  }
  return labels;
}

/**
 * The largest IDX array this library reads: 2 GiB, above any data set it
 * trains on in memory (Fashion-MNIST's training images are 47 MB).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MAX_IDX_BYTES } from "./idx.ts";
 *
 * assert.equal(MAX_IDX_BYTES, 2 ** 31);
 * ```
 */
export const MAX_IDX_BYTES = 2 ** 31;

/**
 * The most bytes a gzip (deflate) stream can inflate to per compressed byte:
 * deflate's limit is about 1032:1.
 */
const MAX_GZIP_RATIO = 1032;

/** Input pieces fed to the decompressor: bounds each output chunk to ~1032 × this. */
const GZIP_PIECE = 4096;

/** Options for {@linkcode readIdxFile}. */
export interface ReadIdxOptions {
  /** `"images"` (magic 2051, N×rows×cols) or `"labels"` (magic 2049, N). */
  kind: "images" | "labels";
  /** File name used in error messages. Default: the path. */
  name?: string;
}

/**
 * Reads an IDX file, gzipped (name ending in `.gz`) or not, with memory and
 * time bounded by the array its header declares: the header is checked first
 * (magic number, dimensions, at most {@linkcode MAX_IDX_BYTES}, and no more
 * than the file can hold — its size unpacked, 1032× its size gzipped), then
 * exactly that many bytes are filled, and reading stops at the first byte past
 * them. A gzip bomb is thus rejected after inflating at most the declared
 * size plus one chunk (4 MiB). Only regular files are read. Returns the whole
 * file's bytes, for {@linkcode parseIdxImages} or {@linkcode parseIdxLabels}.
 *
 * Throws a {@linkcode DataError} naming the file and the problem.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseIdxLabels, readIdxFile } from "./idx.ts";
 *
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, new Uint8Array([0, 0, 8, 1, 0, 0, 0, 2, 7, 3]));
 * const labels = parseIdxLabels(await readIdxFile(path, { kind: "labels" }));
 * assert.deepEqual([...labels], [7, 3]);
 * await Deno.remove(path);
 * ```
 */
export async function readIdxFile(path: string, options: ReadIdxOptions): Promise<Uint8Array> {
  const name = options.name ?? path;
  const [magic, rank] = options.kind === "images" ? [IDX_IMAGES_MAGIC, 3] : [IDX_LABELS_MAGIC, 1];
  const gzipped = path.endsWith(".gz");
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (error) {
    throw new DataError(`cannot read ${name}: ${(error as Error).message}`, { cause: error });
  }
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  try {
    const info = await file.stat();
    if (!info.isFile) throw new DataError(`${name} is not a regular file`);
    const size = info.size;
    reader = (gzipped
      ? file.readable.pipeThrough(inPieces(GZIP_PIECE)).pipeThrough(
        new DecompressionStream("gzip"),
      )
      : file.readable).getReader();
    const headerLength = 4 + 4 * rank;
    let bytes = new Uint8Array(headerLength);
    let filled = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      let chunk = value;
      while (chunk.length > 0) {
        if (filled === headerLength && bytes.length === headerLength) {
          // The header is in: check it before allocating what it declares.
          const expected = checkHeader(bytes, { magic, rank, name }).byteLength;
          const canHold = gzipped ? MAX_GZIP_RATIO * size : size;
          if (expected > canHold) {
            throw new DataError(
              `${name}: its header declares ${expected} bytes, more than ${
                gzipped ? "a gzip file" : "a file"
              } of ${size} bytes can hold`,
            );
          }
          const whole = new Uint8Array(expected);
          whole.set(bytes);
          bytes = whole;
        }
        if (filled === bytes.length) {
          throw new DataError(
            `${name}: more bytes than the ${bytes.length} its header declares`,
          );
        }
        const take = Math.min(chunk.length, bytes.length - filled);
        bytes.set(chunk.subarray(0, take), filled);
        filled += take;
        chunk = chunk.subarray(take);
      }
    }
    if (filled < headerLength) return bytes.subarray(0, filled); // parse reports it as truncated
    if (bytes.length === headerLength) checkHeader(bytes, { magic, rank, name });
    return bytes.subarray(0, filled);
  } catch (error) {
    if (error instanceof DataError) throw error;
    const what = gzipped ? "not a valid gzip file" : "cannot be read";
    throw new DataError(`${name}: ${what} (${(error as Error).message})`, { cause: error });
  } finally {
    await reader?.cancel().catch(() => {});
    try {
      file.close();
    } catch {
      // already closed by the stream
    }
  }
}

/** Splits a byte stream's chunks into pieces of at most `size` bytes. */
function inPieces(
  size: number,
): TransformStream<Uint8Array<ArrayBuffer>, Uint8Array<ArrayBuffer>> {
  return new TransformStream({
    transform(chunk, controller) {
      for (let at = 0; at < chunk.length; at += size) {
        controller.enqueue(chunk.subarray(at, Math.min(chunk.length, at + size)));
      }
    },
  });
}

/**
 * Checks an IDX header (magic number, non-empty dimensions, a size this
 * library reads) and returns the dimensions and the byte length of the whole
 * file they declare.
 */
function checkHeader(
  bytes: Uint8Array,
  expected: { magic: number; rank: number; name: string },
): { dims: number[]; byteLength: number } {
  const { magic, rank, name } = expected;
  const headerLength = 4 + 4 * rank;
  if (bytes.length < 4) {
    throw new DataError(`${name}: truncated, ${bytes.length} bytes is too short for an IDX file`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const found = view.getUint32(0);
  if (found !== magic) {
    throw new DataError(`${name}: bad magic number ${found}, expected ${magic}`);
  }
  if (bytes.length < headerLength) {
    throw new DataError(
      `${name}: truncated, ${bytes.length} bytes is shorter than the ${headerLength}-byte IDX header`,
    );
  }
  const dims: number[] = [];
  for (let i = 0; i < rank; i++) dims.push(view.getUint32(4 + 4 * i));
  if (dims.some((d) => d === 0)) {
    throw new DataError(`${name}: empty dimension in ${dims.join("×")}`);
  }
  const byteLength = headerLength + dims.reduce((a, b) => a * b, 1);
  if (byteLength > MAX_IDX_BYTES) {
    throw new DataError(
      `${name}: dimensions ${
        dims.join("×")
      } declare ${byteLength} bytes, over the ${MAX_IDX_BYTES}-byte limit`,
    );
  }
  return { dims, byteLength };
}

function readHeader(bytes: Uint8Array, magic: number, rank: number, name: string): number[] {
  const { dims, byteLength: expected } = checkHeader(bytes, { magic, rank, name });
  if (bytes.length < expected) {
    throw new DataError(
      `${name}: truncated, ${bytes.length} bytes where dimensions ${
        dims.join("×")
      } need ${expected}`,
    );
  }
  if (bytes.length > expected) {
    throw new DataError(
      `${name}: ${bytes.length - expected} unexpected bytes after the ${dims.join("×")} array`,
    );
  }
  return dims;
}
