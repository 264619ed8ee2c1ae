import assert from "node:assert/strict";
import { DataError } from "../lib/errors.ts";
import { parseIdxImages, parseIdxLabels } from "../lib/data/idx.ts";
import { idxImages, idxLabels } from "./helpers.ts";

Deno.test("parseIdxImages decodes dimensions and pixels", () => {
  const images = parseIdxImages(idxImages(3, 2, 4, (i) => i * 5));
  assert.deepEqual([images.count, images.rows, images.cols], [3, 2, 4]);
  assert.deepEqual(images.pixels.length, 24);
  assert.deepEqual(images.pixels[23], 115);
});

Deno.test("parseIdxLabels decodes labels", () => {
  assert.deepEqual([...parseIdxLabels(idxLabels([9, 0, 4]), { numClasses: 10 })], [9, 0, 4]);
});

Deno.test("IDX errors name the file and the problem", async (t) => {
  const expectError = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(fn, (e: unknown) => e instanceof DataError && pattern.test(e.message));

  await t.step("labels file given as images: bad magic", () => {
    expectError(
      () => parseIdxImages(idxLabels([1, 2]), { name: "x.idx" }),
      /^x\.idx: bad magic number 2049, expected 2051$/,
    );
  });
  await t.step("images file given as labels: bad magic", () => {
    expectError(() => parseIdxLabels(idxImages(1, 2, 2)), /bad magic number 2051, expected 2049/);
  });
  await t.step("truncated header", () => {
    expectError(
      () => parseIdxImages(new Uint8Array([0, 0, 8, 3, 0]), { name: "f" }),
      /^f: truncated, 5 bytes is shorter than the 16-byte IDX header$/,
    );
    expectError(
      () => parseIdxImages(new Uint8Array([0, 0]), { name: "f" }),
      /^f: truncated, 2 bytes is too short for an IDX file$/,
    );
  });
  await t.step("truncated data", () => {
    const bytes = idxImages(4, 28, 28).subarray(0, 16 + 3 * 784);
    expectError(
      () => parseIdxImages(bytes, { name: "imgs" }),
      /^imgs: truncated, 2368 bytes where dimensions 4×28×28 need 3152$/,
    );
  });
  await t.step("trailing bytes", () => {
    const bytes = new Uint8Array([...idxLabels([1, 2]), 7, 7]);
    expectError(() => parseIdxLabels(bytes), /2 unexpected bytes after the 2 array/);
  });
  await t.step("zero-sized dimension", () => {
    expectError(() => parseIdxImages(idxImages(0, 28, 28)), /empty dimension in 0×28×28/);
  });
  await t.step("label out of range", () => {
    expectError(
      () => parseIdxLabels(idxLabels([3, 12]), { name: "l", numClasses: 10 }),
      /^l: label 12 at index 1 is outside 0\.\.9$/,
    );
  });
});
