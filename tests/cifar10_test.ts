/**
 * CIFAR-10 (binary version) on files generated here in the official format:
 * records of a label byte and three 32×32 colour planes, in five training
 * batch files and one test batch file, loose, in the unpacked folder, or in
 * a `.tar.gz` archive. The real data is never needed (nor committed).
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { CIFAR10_RECORD_BYTES, loadCIFAR10 } from "../lib/data/cifar10.ts";
import { DataError } from "../lib/errors.ts";
import { gzip, runScript, withTempDir } from "./helpers.ts";

const TRAIN = [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`);
const TEST = "test_batch.bin";

/** `count` records; record n has label (n + salt) % 10 and pixel values derived from n. */
function batch(count: number, salt: number): Uint8Array {
  const bytes = new Uint8Array(count * CIFAR10_RECORD_BYTES);
  for (let n = 0; n < count; n++) {
    const at = n * CIFAR10_RECORD_BYTES;
    bytes[at] = (n + salt) % 10;
    for (let i = 0; i < 3072; i++) bytes[at + 1 + i] = (n * 7 + i * 13 + salt) % 256;
  }
  return bytes;
}

/** The six batch files: 20 training records each, 10 test records. */
function batches(): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  TRAIN.forEach((name, i) => files.set(name, batch(20, i)));
  files.set(TEST, batch(10, 9));
  return files;
}

/** A ustar archive of `entries` (name → bytes, or a declared size with no bytes behind it). */
function tar(entries: [string, Uint8Array | { declared: number }][]): Uint8Array {
  const parts: Uint8Array[] = [];
  const ascii = (text: string) => new TextEncoder().encode(text);
  for (const [name, content] of entries) {
    const header = new Uint8Array(512);
    const size = content instanceof Uint8Array ? content.length : content.declared;
    header.set(ascii(name), 0);
    header.set(ascii("0000644\0"), 100);
    header.set(ascii("0000000\0"), 108);
    header.set(ascii("0000000\0"), 116);
    header.set(ascii(size.toString(8).padStart(11, "0") + "\0"), 124);
    header.set(ascii("00000000000\0"), 136);
    header[156] = "0".charCodeAt(0);
    header.set(ascii("ustar\0" + "00"), 257);
    header.set(ascii("        "), 148);
    const sum = header.reduce((a, b) => a + b, 0);
    header.set(ascii(sum.toString(8).padStart(6, "0") + "\0 "), 148);
    parts.push(header);
    if (content instanceof Uint8Array) {
      parts.push(content, new Uint8Array(Math.ceil(content.length / 512) * 512 - content.length));
    }
  }
  parts.push(new Uint8Array(1024));
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

async function archive(dir: string, entries: [string, Uint8Array | { declared: number }][]) {
  await Deno.writeFile(join(dir, "cifar-10-binary.tar.gz"), await gzip(tar(entries)));
}

Deno.test("CIFAR-10 loads from loose batch files, the unpacked folder and the archive, to the same images", async () => {
  await withTempDir(async (root) => {
    const files = batches();
    const loose = join(root, "loose");
    const folder = join(root, "folder");
    const packed = join(root, "packed");
    await Deno.mkdir(loose);
    await Deno.mkdir(join(folder, "cifar-10-batches-bin"), { recursive: true });
    await Deno.mkdir(packed);
    for (const [name, bytes] of files) {
      await Deno.writeFile(join(loose, name), bytes);
      await Deno.writeFile(join(folder, "cifar-10-batches-bin", name), bytes);
    }
    await archive(packed, [
      ["cifar-10-batches-bin/batches.meta.txt", new TextEncoder().encode("airplane\n")],
      ...[...files].map(([name, bytes]) =>
        [`cifar-10-batches-bin/${name}`, bytes] as [string, Uint8Array]
      ),
    ]);
    const cacheDir = join(root, "cache");
    const loaded = [];
    for (const dataDir of [loose, folder, packed]) {
      loaded.push(await loadCIFAR10({ dataDir, cacheDir, quiet: true, download: false }));
    }
    const { train, test } = loaded[0];
    assert.deepEqual([train.count, train.rows, train.cols, train.channels], [100, 32, 32, 3]);
    assert.equal(test.count, 10);
    // Record 21 is the second of data_batch_2.bin: label (1 + 1) % 10, pixel (y, x) channel c
    // from plane c at y * 32 + x.
    const second = files.get("data_batch_2.bin")!.subarray(CIFAR10_RECORD_BYTES);
    assert.equal(train.labels[21], second[0]);
    for (const [y, x, c] of [[0, 0, 0], [0, 0, 2], [5, 7, 1], [31, 31, 2]]) {
      const p = y * 32 + x;
      assert.equal(train.images[21 * 3072 + p * 3 + c], second[1 + c * 1024 + p], `${y},${x},${c}`);
    }
    for (const other of loaded.slice(1)) {
      assert.deepEqual(other.train.images, train.images);
      assert.deepEqual(other.train.labels, train.labels);
      assert.deepEqual(other.test.images, test.images);
    }
  });
});

Deno.test("CIFAR-10 files that are wrong: one DataError naming the file", async (t) => {
  await withTempDir(async (root) => {
    const cases: [string, (dir: string) => Promise<void>, RegExp][] = [
      [
        "a batch file that is not whole records",
        async (dir) => {
          for (const [name, bytes] of batches()) await Deno.writeFile(join(dir, name), bytes);
          await Deno.writeFile(join(dir, TEST), new Uint8Array(CIFAR10_RECORD_BYTES + 5));
        },
        /test_batch\.bin: 3078 bytes is not a whole number of 3073-byte records$/,
      ],
      [
        "a label past 9",
        async (dir) => {
          for (const [name, bytes] of batches()) await Deno.writeFile(join(dir, name), bytes);
          const bad = batch(3, 0);
          bad[2 * CIFAR10_RECORD_BYTES] = 10;
          await Deno.writeFile(join(dir, "data_batch_3.bin"), bad);
        },
        /data_batch_3\.bin: record 2 has label 10, not one of 0\.\.9$/,
      ],
      [
        "a batch file missing",
        async (dir) => {
          for (const [name, bytes] of batches()) {
            if (name !== "data_batch_4.bin") await Deno.writeFile(join(dir, name), bytes);
          }
        },
        /has no data_batch_4\.bin; put cifar-10-binary\.tar\.gz from /,
      ],
      [
        "nothing there",
        async () => {},
        /has neither cifar-10-binary\.tar\.gz nor the batch files; put /,
      ],
      [
        "an archive that declares more than it may unpack to",
        (dir) => archive(dir, [["cifar-10-batches-bin/huge.bin", { declared: 300 * 2 ** 20 }]]),
        /cifar-10-binary\.tar\.gz: unpacks to more than 268435456 bytes/,
      ],
      [
        "an archive without the batch files",
        (dir) => archive(dir, [["readme.html", new Uint8Array(10)]]),
        /holds no data_batch_1\.bin, .*test_batch\.bin: it is not CIFAR-10's archive$/,
      ],
      [
        "a file that is not gzip",
        (dir) => Deno.writeTextFile(join(dir, "cifar-10-binary.tar.gz"), "not gzip at all"),
        /cifar-10-binary\.tar\.gz: not a valid \.tar\.gz archive/,
      ],
    ];
    for (const [name, make, message] of cases) {
      await t.step(name, async () => {
        const dir = await Deno.makeTempDir({ dir: root });
        await make(dir);
        const error = await loadCIFAR10({
          dataDir: dir,
          cacheDir: join(root, "cache"),
          quiet: true,
        })
          .then(() => undefined, (e) => e);
        assert.ok(error instanceof DataError, String(error));
        assert.match(error.message, message);
        assert.equal(error.message.includes("\n"), false);
      });
    }
    await t.step(
      "an archive in the download cache that is not the official one is refused",
      async () => {
        const cacheDir = await Deno.makeTempDir({ dir: root });
        await archive(cacheDir, [...batches()].map(([n, b]) => [`cifar-10-batches-bin/${n}`, b]));
        await assert.rejects(
          loadCIFAR10({ cacheDir, download: false, quiet: true }),
          (e: unknown) =>
            e instanceof DataError &&
            /cifar-10-binary\.tar\.gz in the download cache differs from the official archive \(SHA-256\): delete it/
              .test(e.message),
        );
      },
    );
  });
});

Deno.test("deno task train --model resnet18 --dataset cifar10: end to end on a generated archive", async () => {
  await withTempDir(async (dir) => {
    await archive(dir, [...batches()].map(([n, b]) => [`cifar-10-batches-bin/${n}`, b]));
    const { code, stdout, stderr } = await runScript("scripts/train.ts", [
      "--model",
      "resnet18",
      "--dataset",
      "cifar10",
      "--data-dir",
      dir,
      "--input-size",
      "32",
      "--width",
      "0.125",
      "--batch-size",
      "20",
      "--epochs",
      "1",
      "--workers",
      "2",
    ]);
    assert.equal(code, 0, stderr);
    const lines = stdout.trimEnd().split("\n");
    assert.match(
      lines[0],
      /^ResNet-18 \(177,738 parameters, 32×32×3 input, width 0\.125\) on 100 training \/ 10 test examples$/,
    );
    assert.match(lines[2], /^epoch 1\/1: loss \d+\.\d{3}, /);
    assert.match(
      stderr,
      /differs from the official CIFAR-10 archive \(SHA-256\); using it as given/,
    );
  });
});
