import assert from "node:assert/strict";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { exportLayersModel, loadLayersModelFromDir, setFlatWeights } from "../lib/model/export.ts";
import { DataError } from "../lib/errors.ts";
import { createNiN } from "../lib/model/nin.ts";
import { initBackend } from "../lib/train/shared/backend.ts";
import { toModelInput } from "../lib/train/shared/model_input.ts";
import { train } from "../lib/train/coordinator/train.ts";
import { imageLikeDataset, runScript, withTempDir, writeTinyDataset } from "./helpers.ts";

const MODEL = { inputSize: 67, width: 0.125 };
const run = (script: string, args: string[]) => runScript(script, args);

Deno.test("an exported model loads back with tfjs and predicts exactly as the trained weights do", async () => {
  const data = { train: imageLikeDataset(16, 1), test: imageLikeDataset(8, 2) };
  const { weights } = await train({
    model: { name: "nin", ...MODEL },
    distributed: { workers: 2 },
    epochs: 1,
    batchSize: 8,
    data,
  });
  await initBackend("cpu");
  await withTempDir(async (dir) => {
    await exportLayersModel(weights, { dir, model: { name: "nin", options: MODEL } });
    const loaded = await loadLayersModelFromDir(dir);
    const direct = createNiN(MODEL);
    setFlatWeights(direct, weights);
    const x = toModelInput({ ...data.test, count: 8 }, { height: 67, width: 67 });
    const [a, b] = [loaded.predict(x) as tf.Tensor, direct.predict(x) as tf.Tensor];
    assert.deepEqual(await a.data(), await b.data());
    assert.equal(loaded.countParams(), direct.countParams());
    tf.dispose([x, a, b]);
    loaded.dispose();
    direct.dispose();
  });
});

const MODEL_FLAGS = {
  nin: ["--input-size", "67", "--width", "0.125"],
  lenet: ["--model", "lenet"],
};

Deno.test("train --export, then eval --model and eval --checkpoint report accuracy, per class and confused", async (t) => {
  for (const [name, modelFlags] of Object.entries(MODEL_FLAGS)) {
    await t.step(name, () => exportThenEvaluate(modelFlags));
  }
});

async function exportThenEvaluate(modelFlags: string[]): Promise<void> {
  await withTempDir(async (dir) => {
    await writeTinyDataset(dir, { train: 32, test: 20 });
    const trained = await run("scripts/train.ts", [
      "--data-dir",
      dir,
      "--workers",
      "2",
      "--epochs",
      "1",
      "--batch-size",
      "16",
      ...modelFlags,
      "--checkpoint-dir",
      `${dir}/ckpt`,
      "--export",
      `${dir}/model`,
    ]);
    assert.equal(trained.code, 0, trained.stderr);
    assert.match(trained.stdout, /^model saved to .*\/model \(TensorFlow\.js LayersModel\)$/m);
    const testAcc = Number(trained.stdout.match(/^loss \S+, train acc \S+, test acc (\S+)$/m)![1]);

    for (
      const source of [["--model", `${dir}/model`], [
        "--checkpoint",
        `${dir}/ckpt/ckpt-0001-000000.msgpack`,
      ]]
    ) {
      const evaluated = await run("scripts/eval.ts", [
        ...source,
        "--data-dir",
        dir,
        "--plot",
        `${dir}/c.svg`,
      ]);
      assert.equal(evaluated.code, 0, evaluated.stderr);
      const accuracy = Number(evaluated.stdout.match(/^test accuracy (\S+) on 20 examples$/m)![1]);
      assert.equal(
        accuracy.toFixed(3),
        testAcc.toFixed(3),
        "the same accuracy as training reported",
      );
      assert.match(evaluated.stdout, /^class\s+examples\s+correct\s+accuracy$/m);
      assert.match(evaluated.stdout, /^Ankle boot\s+2\s+\d+\s+\S+$/m);
      assert.match(evaluated.stdout, /^true \\ predicted\s+T-sh\s+Trou/m);
      const svg = await Deno.readTextFile(`${dir}/c.svg`);
      assert.equal((svg.match(/<rect x=/g) ?? []).length, 100);
    }
  });
}

Deno.test("eval rejects bad input with one line and exit code 2", async () => {
  for (
    const [args, pattern] of [
      [[], /give exactly one of --model DIR and --checkpoint FILE/],
      [["--model", "a", "--checkpoint", "b"], /give exactly one of/],
      [["--model", "/nonexistent/model"], /cannot read \/nonexistent\/model\/model\.json/],
      [
        ["--checkpoint", "/nonexistent/c.msgpack"],
        /cannot read checkpoint \/nonexistent\/c\.msgpack/,
      ],
    ] as const
  ) {
    const { code, stdout, stderr } = await run("scripts/eval.ts", [...args]);
    assert.equal(code, 2, stderr);
    assert.equal(stderr.trimEnd().split("\n").length, 1, stderr);
    assert.match(stderr, pattern);
    assert.equal(stdout, "");
  }
});

Deno.test("loading a model reads only its own files, as large as its manifest says", async (t) => {
  await initBackend("cpu");
  await withTempDir(async (dir) => {
    const nin = createNiN(MODEL);
    const weights = new Float32Array(nin.countParams());
    nin.dispose();
    await exportLayersModel(weights, { dir, model: { name: "nin", options: MODEL } });
    const manifest = JSON.parse(await Deno.readTextFile(`${dir}/model.json`));
    const rewrite = (paths: string[]) =>
      Deno.writeTextFile(
        `${dir}/model.json`,
        JSON.stringify({
          ...manifest,
          weightsManifest: [{ ...manifest.weightsManifest[0], paths }],
        }),
      );
    await t.step("a path outside the model directory", async () => {
      await rewrite(["../../dev/zero"]);
      await assert.rejects(
        loadLayersModelFromDir(dir),
        (e: unknown) =>
          e instanceof DataError &&
          /names a weights file outside .*: \.\.\/\.\.\/dev\/zero$/.test(e.message),
      );
    });
    await t.step("a device inside it", async () => {
      await Deno.symlink("/dev/zero", `${dir}/zero.bin`);
      await rewrite(["zero.bin"]);
      await assert.rejects(loadLayersModelFromDir(dir), /zero\.bin is not a regular file$/);
    });
    await t.step("a weights file larger than the manifest's weights", async () => {
      await Deno.writeFile(`${dir}/big.bin`, new Uint8Array(4 * weights.length + 4));
      await rewrite(["big.bin"]);
      await assert.rejects(
        loadLayersModelFromDir(dir),
        new RegExp(
          `big\\.bin has ${4 * weights.length + 4} bytes, more than the ${
            4 * weights.length
          } expected$`,
        ),
      );
    });
  });
});
