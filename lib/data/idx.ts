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

function readHeader(bytes: Uint8Array, magic: number, rank: number, name: string): number[] {
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
  const expected = headerLength + dims.reduce((a, b) => a * b, 1);
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
