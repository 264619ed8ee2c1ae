import assert from "node:assert/strict";
import { DataError } from "../lib/errors.ts";
import { parseIdxImages, parseIdxLabels, readIdxFile } from "../lib/data/idx.ts";
import { gzip, idxImages, idxLabels, withTempDir } from "./helpers.ts";

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

/** Writes `header` followed by `zeros` zero bytes, gzipped, to `path`, without holding them in memory. */
async function writeGzippedZeros(path: string, header: Uint8Array, zeros: number): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const gzip = new CompressionStream("gzip");
  const written = gzip.readable.pipeTo(file.writable);
  const writer = gzip.writable.getWriter();
  await writer.write(header as Uint8Array<ArrayBuffer>);
  const block = new Uint8Array(1 << 20);
  for (let left = zeros; left > 0; left -= block.length) {
    await writer.write(block.subarray(0, Math.min(left, block.length)));
  }
  await writer.close();
  await written;
}

Deno.test("a gzip bomb is rejected after inflating what its header declares, no more", async () => {
  await withTempDir(async (dir) => {
    // Fashion-MNIST's training images: 60000×28×28 declared, 47 MB.
    const header = idxImages(1, 1, 1).subarray(0, 16);
    new DataView(header.buffer).setUint32(4, 60000);
    new DataView(header.buffer).setUint32(8, 28);
    new DataView(header.buffer).setUint32(12, 28);
    const declared = 60000 * 28 * 28;
    await writeGzippedZeros(`${dir}/good.gz`, header, declared);
    await writeGzippedZeros(`${dir}/bomb.gz`, header, declared + 1024 * 2 ** 20); // + 1 GiB
    const bombSize = (await Deno.stat(`${dir}/bomb.gz`)).size;
    assert.ok(bombSize < 2e6, `the bomb is small: ${bombSize} bytes`);

    let started = performance.now();
    const good = await readIdxFile(`${dir}/good.gz`, { kind: "images" });
    const goodMs = performance.now() - started;
    assert.equal(good.length, 16 + declared);

    const rssBefore = Deno.memoryUsage().rss;
    started = performance.now();
    await assert.rejects(
      readIdxFile(`${dir}/bomb.gz`, { kind: "images", name: "bomb.gz" }),
      (e: unknown) =>
        e instanceof DataError &&
        e.message === `bomb.gz: more bytes than the ${16 + declared} its header declares`,
    );
    const bombMs = performance.now() - started;
    const grown = Deno.memoryUsage().rss - rssBefore;
    // Memory: the declared array plus a few decompressed chunks (each at most
    // ~1032 × 4 KiB) and the streams' own, not the 1 GiB the bomb inflates to
    // (the unbounded reader grew RSS by 2 GB here; a first read of a good file
    // of this size by about 96 MB).
    assert.ok(grown < declared + 128 * 2 ** 20, `RSS grew by ${grown} bytes`);
    // Time: about that of reading the declared bytes, not 22× more (the
    // unbounded reader took 8.8 s here, against 0.12 s for the good file).
    assert.ok(
      bombMs < 4 * goodMs + 50,
      `bomb rejected in ${bombMs} ms, good file read in ${goodMs} ms`,
    );
  });
});

Deno.test("readIdxFile checks the header against what the file can hold before allocating", async (t) => {
  await withTempDir(async (dir) => {
    await t.step("unpacked: declared size larger than the file", async () => {
      const bytes = idxImages(2, 2, 2);
      new DataView(bytes.buffer).setUint32(4, 1_000_000); // claims 4 MB in a 24-byte file
      await Deno.writeFile(`${dir}/lying`, bytes);
      await assert.rejects(
        readIdxFile(`${dir}/lying`, { kind: "images", name: "lying" }),
        /^DataError: lying: its header declares 4000016 bytes, more than a file of 24 bytes can hold$/,
      );
    });
    await t.step("gzipped: more than 1032× the compressed size", async () => {
      const bytes = idxImages(2, 2, 2);
      new DataView(bytes.buffer).setUint32(4, 60000);
      new DataView(bytes.buffer).setUint32(8, 280);
      new DataView(bytes.buffer).setUint32(12, 280); // 4.7 GB declared
      await Deno.writeFile(`${dir}/huge.gz`, await gzip(bytes));
      await assert.rejects(
        readIdxFile(`${dir}/huge.gz`, { kind: "images", name: "huge.gz" }),
        /^DataError: huge\.gz: dimensions 60000×280×280 declare 4704000016 bytes, over the 2147483648-byte limit$/,
      );
      new DataView(bytes.buffer).setUint32(8, 28);
      new DataView(bytes.buffer).setUint32(12, 28); // 47 MB declared in a ~40-byte file
      await Deno.writeFile(`${dir}/small.gz`, await gzip(bytes));
      await assert.rejects(
        readIdxFile(`${dir}/small.gz`, { kind: "images", name: "small.gz" }),
        /^DataError: small\.gz: its header declares 47040016 bytes, more than a gzip file of \d+ bytes can hold$/,
      );
    });
    await t.step("not a regular file", async () => {
      await assert.rejects(
        readIdxFile("/dev/zero", { kind: "labels" }),
        /^DataError: \/dev\/zero is not a regular file$/,
      );
      await assert.rejects(readIdxFile(dir, { kind: "labels" }), /is not a regular file$/);
    });
  });
});
