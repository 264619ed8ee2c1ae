import assert from "node:assert/strict";
import type { Dataset } from "../lib/data/dataset.ts";
import { DataError, UsageError, WorkerError } from "../lib/errors.ts";
import { readCheckpoint } from "../lib/train/shared/checkpoint.ts";
import { train } from "../lib/train/coordinator/train.ts";
import type { TrainOptions } from "../lib/train/shared/options.ts";
import { mulberry32 } from "../lib/util/random.ts";
import { withTempDir } from "./helpers.ts";
import { createModel } from "./fixtures/tiny_model.ts";
import { initBackend } from "../lib/train/shared/backend.ts";
import { trainInterrupted } from "./train_helpers.ts";

const MODULE = new URL("./fixtures/tiny_model.ts", import.meta.url);

/**
 * 8×8 RGB float32 images of three classes: class c is a bright patch in
 * channel c at a random place, on low noise.
 */
function rgbDataset(count: number, seed: number): Dataset {
  const next = mulberry32(seed);
  const uniform = () => next() / 2 ** 32;
  const images = new Float32Array(count * 8 * 8 * 3);
  const labels = new Uint8Array(count);
  for (let n = 0; n < count; n++) {
    const label = next() % 3;
    labels[n] = label;
    const x0 = next() % 5, y0 = next() % 5;
    for (let i = 0; i < 64 * 3; i++) images[n * 192 + i] = 0.1 * uniform();
    for (let y = y0; y < y0 + 3; y++) {
      for (let x = x0; x < x0 + 3; x++) images[n * 192 + (y * 8 + x) * 3 + label] = 0.9;
    }
  }
  return { images, labels, count, rows: 8, cols: 8, channels: 3 };
}

const RUN = {
  model: { module: MODULE, options: { hidden: 12 } },
  data: {
    train: rgbDataset(96, 1),
    test: rgbDataset(30, 2),
    normalize: { mean: [0.1, 0.1, 0.1], std: [0.3, 0.3, 0.3] },
  },
  batchSize: 12, // 8 steps per epoch
  epochs: 3,
  lr: 0.2,
  seed: 5,
  backend: "webgpu" as const,
};

Deno.test("a user's model on a user's data set, with 1, 2 and 4 workers: the replicas agree, and it learns", async () => {
  for (const workers of [1, 2, 4]) {
    // train() compares every replica's weight checksum after each epoch and
    // throws a ReplicaDivergenceError if one differs.
    const result = await train({ ...RUN, distributed: { workers } });
    assert.equal(result.history.length, 3);
    assert.ok(result.history[2].testAcc >= 0.9, `test accuracy ${result.history[2].testAcc}`);
  }
});

Deno.test("with shards: 4, 1, 2 and 4 workers end with the same weights, bit for bit (dropout included)", async () => {
  // Every batch is cut into 4 shards whatever the worker count; each shard's
  // gradient (its dropout mask drawn from its shard index) is its own term of
  // the average, in shard order, so only who computes which shard changes.
  // Batch 10 gives shards of 3, 3, 2 and 2: with weights that are not powers
  // of two the order of the terms shows in the bits (checked: interleaving
  // the slots of the shared all-reduce, or drawing dropout by rank, fails).
  const checksums = new Map<string, string>();
  for (
    const [workers, allReduce] of [[1, "shared"], [2, "shared"], [4, "shared"], [
      2,
      "star",
    ]] as const
  ) {
    const result = await train({
      ...RUN,
      distributed: { workers, allReduce, shards: 4 },
      batchSize: 10,
    });
    checksums.set(`${workers} × ${allReduce}`, result.checksum);
  }
  assert.equal(new Set(checksums.values()).size, 1, JSON.stringify(Object.fromEntries(checksums)));
});

Deno.test("with shards, a run interrupted with 2 workers and resumed with 1 gives the 4-worker bits", async () => {
  const straight = await train({ ...RUN, distributed: { workers: 4, shards: 4 } });
  await withTempDir(async (dir) => {
    const saved = await trainInterrupted(
      { ...RUN, distributed: { workers: 2, shards: 4 } },
      { epoch: 2, step: 3, dir },
    );
    assert.equal((await readCheckpoint(saved.path)).config.shards, 4);
    // The checkpoint's shards are kept; the worker count may change.
    // A checkpoint is data: the model's module comes from the caller, compared with its record.
    const resumed = await train({
      data: RUN.data,
      model: RUN.model,
      checkpoint: { dir, resume: true },
      distributed: { workers: 1 },
    });
    assert.equal(resumed.checksum, straight.checksum);
  });
});

Deno.test("without shards, 1, 2 and 4 workers end with the same weights up to float rounding", async () => {
  // Without shards a batch has one per worker, so the number of terms in the
  // gradient's average (and the dropout masks) change with the worker count.
  const model = { module: MODULE, options: { hidden: 12, dropout: 0 } };
  const results = [];
  for (const workers of [1, 2, 4]) {
    results.push(await train({ ...RUN, model, distributed: { workers } }));
  }
  for (const other of results.slice(1)) {
    let worst = 0;
    for (let i = 0; i < other.weights.length; i++) {
      const scale = Math.max(1e-2, Math.abs(results[0].weights[i]));
      worst = Math.max(worst, Math.abs(other.weights[i] - results[0].weights[i]) / scale);
    }
    // Measured: 1.8e-6 (float32 rounding of the shards' gradient sums).
    assert.ok(worst < 1e-4, `largest relative difference to one worker: ${worst}`);
  }
});

Deno.test("a user's model with momentum and with Adam: interrupted, resumed, the same bits as uninterrupted", async (t) => {
  const optimizers = [
    { optimizer: { name: "sgd", momentum: 0.9, nesterov: true, weightDecay: 1e-3 }, lr: 0.05 },
    { optimizer: { name: "adam" }, lr: 0.01, schedule: { name: "cosine", warmupEpochs: 1 } },
  ] as const;
  for (const settings of optimizers) {
    await t.step(settings.optimizer.name, async () => {
      const run = { ...RUN, ...settings, distributed: { workers: 2 } };
      const straight = await train(run);
      await withTempDir(async (dir) => {
        const saved = await trainInterrupted(run, { epoch: 2, step: 3, dir });
        assert.deepEqual([saved.epochsDone, saved.stepsDone < 8], [1, true]);
        const state = await readCheckpoint(saved.path);
        assert.equal(state.config.model.name, "custom");
        assert.equal(state.config.model.module, MODULE.href);
        assert.deepEqual(state.config.model.options, { hidden: 12, seed: 5 });
        assert.equal(state.optimizer.state?.step, 8 + saved.stepsDone);
        const resumed = await train({
          data: run.data,
          model: run.model,
          checkpoint: { dir, resume: true },
        });
        assert.equal(resumed.checksum, straight.checksum); // the SHA-256 of every weight
      });
    });
  }
});

Deno.test("a LayersModel and a { topology }: checkpointed, interrupted, resumed with the model given, the uninterrupted bits", async (t) => {
  await initBackend("cpu");
  for (const kind of ["LayersModel", "topology"] as const) {
    await t.step(kind, async () => {
      // Built anew for each run, as a user's script does: tfjs names its layers afresh
      // (dense_Dense7, …), and the resumed run must still recognise the architecture.
      const model = () => {
        const built = createModel({ seed: 5, hidden: 12 });
        return kind === "LayersModel" ? built : { topology: built.toJSON(null, false) };
      };
      const run = { ...RUN, model: model(), distributed: { workers: 2, shards: 2 } };
      const straight = await train(run);
      await withTempDir(async (dir) => {
        await trainInterrupted({ ...run, model: model() }, { epoch: 2, step: 3, dir });
        await assert.rejects(
          train({ data: run.data, checkpoint: { dir, resume: true } }),
          /was trained with your own model \(given as a LayersModel \(its topology\)\): give the same model/,
        );
        const resumed = await train({
          data: run.data,
          model: model(),
          checkpoint: { dir, resume: true },
        });
        assert.equal(resumed.checksum, straight.checksum);
      });
    });
  }
});

Deno.test("a model or data the trainer cannot use: one clear error before training", async (t) => {
  const cases: [string, TrainOptions, (e: unknown) => boolean][] = [
    [
      "a module that does not load",
      { model: { module: new URL("./fixtures/no_such_model.ts", import.meta.url) } },
      (e) => e instanceof UsageError && /no_such_model\.ts cannot be loaded/.test(e.message),
    ],
    [
      "an export that is not there",
      { model: { module: MODULE, export: "createModle" } },
      (e) => e instanceof UsageError && /has no exported function createModle$/.test(e.message),
    ],
    [
      "a factory that returns no model",
      { model: { module: MODULE, export: "notAModel" } },
      (e) =>
        e instanceof UsageError &&
        /notAModel of .*: did not return a tfjs LayersModel$/.test(e.message),
    ],
    [
      "nothing to train",
      { model: { module: MODULE, export: "allFrozen" } },
      (e) =>
        e instanceof UsageError &&
        /allFrozen of .*: the model has no trainable weights$/.test(e.message),
    ],
    [
      "options that are not JSON",
      { model: { module: MODULE, options: { hidden: () => 3 } } },
      (e) => e instanceof UsageError && /model\.options must hold JSON values only/.test(e.message),
    ],
    [
      "NiN's options beside a module",
      { model: { module: MODULE, width: 0.5 } as TrainOptions["model"] },
      (e) =>
        e instanceof UsageError &&
        /^model: a module's model takes module, export and options, not width/.test(e.message),
    ],
    [
      "data with other channels than the model takes",
      { model: "lenet" },
      (e) =>
        e instanceof DataError &&
        e.message === "the model takes 1-channel images but the data has 3 channel(s)",
    ],
    [
      "labels past the model's classes",
      { model: { module: MODULE, options: { classes: 2 } } },
      (e) =>
        e instanceof DataError &&
        /^the training data has label 2 but the model tells 2 classes apart \(0\.\.1\)$/.test(
          e.message,
        ),
    ],
  ];
  for (const [name, options, check] of cases) {
    await t.step(name, async () => {
      await assert.rejects(
        train({ ...RUN, distributed: { workers: 2, maxRestarts: 2 }, ...options }),
        check,
      );
    });
  }
});

Deno.test("a model factory that never finishes: the run stops at the start-up timeout, naming the worker and what it was doing", async () => {
  const startupTimeout = 3;
  const started = performance.now();
  await assert.rejects(
    train({
      ...RUN,
      model: { module: MODULE, export: "neverBuilt" },
      distributed: { workers: 2, startupTimeout },
    }),
    (e: unknown) =>
      e instanceof WorkerError &&
      /^worker 0 failed: not ready within the start-up timeout of 3 s: it was still building the model \(neverBuilt of file:.*tiny_model\.ts\)$/
        .test(e.message),
  );
  // Bound: the deadline, plus the workers' start and their termination.
  const seconds = (performance.now() - started) / 1000;
  assert.ok(seconds < startupTimeout + 10, `stopped after ${seconds.toFixed(1)} s`);
});
