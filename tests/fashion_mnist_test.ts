import assert from "node:assert/strict";
import {
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_FILES,
  loadFashionMNIST,
} from "../lib/data/fashion_mnist.ts";
import { DataError } from "../lib/errors.ts";
import {
  DATA_DIR,
  gzip,
  idxImages,
  idxLabels,
  withEnv,
  withTempDir,
  writeTinyDataset,
} from "./helpers.ts";
import { ignoredWithout } from "./skips.ts";

const names = Object.values(FASHION_MNIST_FILES).map((f) => f.name);
const dataError = (pattern: RegExp) => (e: unknown) =>
  e instanceof DataError && pattern.test(e.message) && !e.message.includes("\n");

Deno.test("FASHION_MNIST_CLASSES names the ten classes in label order", () => {
  assert.equal(FASHION_MNIST_CLASSES.length, 10);
  assert.equal(FASHION_MNIST_CLASSES[0], "T-shirt/top");
  assert.equal(FASHION_MNIST_CLASSES[9], "Ankle boot");
});

Deno.test({
  name: "loadFashionMNIST reads the official files",
  ignore: await ignoredWithout("fashion-mnist"),
  fn: async () => {
    const { train, test } = await loadFashionMNIST({ dataDir: DATA_DIR });
    assert.deepEqual([train.count, train.rows, train.cols], [60000, 28, 28]);
    assert.deepEqual([test.count, test.rows, test.cols], [10000, 28, 28]);
    assert.equal(train.images.length, 60000 * 784);
    assert.equal(train.labels[0], 9); // the first training image is an ankle boot
    const perClass = (labels: Uint8Array) => {
      const counts = new Array(10).fill(0);
      for (const label of labels) counts[label]++;
      return counts;
    };
    assert.deepEqual(perClass(train.labels), new Array(10).fill(6000));
    assert.deepEqual(perClass(test.labels), new Array(10).fill(1000));
  },
});

Deno.test({
  name: "loadFashionMNIST honours FASHION_MNIST_DIR",
  ignore: await ignoredWithout("fashion-mnist"),
  fn: async () => {
    await withEnv({ FASHION_MNIST_DIR: DATA_DIR }, async () => {
      const { test } = await loadFashionMNIST({ download: false, cacheDir: "/nonexistent" });
      assert.equal(test.count, 10000);
    });
  },
});

Deno.test("loadFashionMNIST accepts unpacked files too", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/train-images-idx3-ubyte`, idxImages(4, 28, 28));
    await Deno.writeFile(`${dir}/train-labels-idx1-ubyte`, idxLabels([1, 2, 3, 4]));
    await Deno.writeFile(`${dir}/t10k-images-idx3-ubyte.gz`, await gzip(idxImages(2, 28, 28)));
    await Deno.writeFile(`${dir}/t10k-labels-idx1-ubyte.gz`, await gzip(idxLabels([5, 6])));
    const { train, test } = await loadFashionMNIST({ dataDir: dir });
    assert.deepEqual([...train.labels], [1, 2, 3, 4]);
    assert.deepEqual([...test.labels], [5, 6]);
  });
});

Deno.test("loadFashionMNIST rejects missing, corrupt and mismatched files with one clear line", async (t) => {
  await t.step("directory does not exist", async () => {
    await assert.rejects(
      loadFashionMNIST({ dataDir: "/nonexistent/fmnist" }),
      dataError(
        /^data dir \/nonexistent\/fmnist is not a directory; put the four Fashion-MNIST files/,
      ),
    );
  });
  await t.step("a file is missing", async () => {
    await withTempDir(async (dir) => {
      await writeTinyDataset(dir);
      await Deno.remove(`${dir}/t10k-labels-idx1-ubyte.gz`);
      await assert.rejects(
        loadFashionMNIST({ dataDir: dir }),
        dataError(
          new RegExp(`^${dir} has no t10k-labels-idx1-ubyte\\.gz; put the four .*${names[0]}`),
        ),
      );
    });
  });
  await t.step("not gzip", async () => {
    await withTempDir(async (dir) => {
      await writeTinyDataset(dir);
      await Deno.writeTextFile(`${dir}/train-images-idx3-ubyte.gz`, "<html>404</html>");
      await assert.rejects(
        loadFashionMNIST({ dataDir: dir }),
        dataError(/train-images-idx3-ubyte\.gz: not a valid gzip file/),
      );
    });
  });
  await t.step("truncated gzip", async () => {
    await withTempDir(async (dir) => {
      await writeTinyDataset(dir);
      const bytes = await Deno.readFile(`${dir}/train-images-idx3-ubyte.gz`);
      await Deno.writeFile(
        `${dir}/train-images-idx3-ubyte.gz`,
        bytes.subarray(0, bytes.length / 2),
      );
      await assert.rejects(
        loadFashionMNIST({ dataDir: dir }),
        dataError(/train-images-idx3-ubyte\.gz/),
      );
    });
  });
  await t.step("labels and images disagree in count", async () => {
    await withTempDir(async (dir) => {
      await writeTinyDataset(dir, { train: 20 });
      await Deno.writeFile(`${dir}/train-labels-idx1-ubyte.gz`, await gzip(idxLabels([1, 2, 3])));
      await assert.rejects(
        loadFashionMNIST({ dataDir: dir }),
        dataError(
          /train-images-idx3-ubyte\.gz has 20 images but .*train-labels-idx1-ubyte\.gz has 3 labels/,
        ),
      );
    });
  });
  await t.step("files swapped", async () => {
    await withTempDir(async (dir) => {
      await writeTinyDataset(dir);
      await Deno.rename(`${dir}/t10k-labels-idx1-ubyte.gz`, `${dir}/tmp`);
      await Deno.rename(`${dir}/t10k-images-idx3-ubyte.gz`, `${dir}/t10k-labels-idx1-ubyte.gz`);
      await Deno.rename(`${dir}/tmp`, `${dir}/t10k-images-idx3-ubyte.gz`);
      await assert.rejects(
        loadFashionMNIST({ dataDir: dir }),
        dataError(/bad magic number 2049, expected 2051/),
      );
    });
  });
  await t.step("cache empty and downloading off", async () => {
    await withTempDir(async (cacheDir) => {
      await assert.rejects(
        withEnv(
          { FASHION_MNIST_DIR: undefined },
          () => loadFashionMNIST({ cacheDir, download: false }),
        ),
        dataError(
          /is missing and downloading is off; put the four Fashion-MNIST files .* or pass --data-dir/,
        ),
      );
    });
  });
});

Deno.test("files in the download cache are checked against the official SHA-256; a tampered one is refused", async () => {
  await withTempDir(async (cacheDir) => {
    await writeTinyDataset(cacheDir); // valid IDX files with the official names, not the official bytes
    await assert.rejects(
      withEnv(
        { FASHION_MNIST_DIR: undefined },
        () => loadFashionMNIST({ cacheDir, download: false }),
      ),
      dataError(
        /^.*train-images-idx3-ubyte\.gz, .* in the download cache differ from the official files \(SHA-256\): delete them to download them again$/,
      ),
    );
  });
});

Deno.test({
  name: "the official files are hashed once per file identity",
  ignore: await ignoredWithout("fashion-mnist"),
  fn: async () => {
    await withTempDir(async (cacheDir) => {
      await loadFashionMNIST({ dataDir: DATA_DIR, cacheDir, quiet: true });
      const record = JSON.parse(await Deno.readTextFile(`${cacheDir}/verified.json`));
      const names = Object.keys(record).map((path) => path.split("/").at(-1)).sort();
      assert.deepEqual(names, Object.values(FASHION_MNIST_FILES).map((f) => f.name).sort());
      for (const value of Object.values(record) as string[]) assert.match(value, /:[0-9a-f]{64}$/);
    });
  },
});
