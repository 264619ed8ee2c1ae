import assert from "node:assert/strict";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { gatherBatch } from "../lib/data/batches.ts";
import { DistributedSampler } from "../lib/data/sampler.ts";
import type { Dataset } from "../lib/data/dataset.ts";
import {
  DataError,
  DivergedError,
  InterruptedError,
  UsageError,
  WorkerError,
} from "../lib/errors.ts";
import { createNiN } from "../lib/model/nin.ts";
import { initBackend } from "../lib/train/shared/backend.ts";
import type { TrainOptions } from "../lib/train/shared/options.ts";
import { train } from "../lib/train/coordinator/train.ts";
import { listCheckpoints, readCheckpoint } from "../lib/train/shared/checkpoint.ts";
import { imageLikeDataset, runScript, withTempDir } from "./helpers.ts";

await initBackend("webgpu");

const DATA = { train: imageLikeDataset(48, 1), test: imageLikeDataset(12, 2), testLimit: 12 };
const NIN = { name: "nin", inputSize: 67, width: 0.125, dropout: 0 } as const;
const CONFIG = { model: NIN, lr: 0.1, seed: 5, batchSize: 16, epochs: 2 } as const;

/**
 * The single-process reference: tfjs' own SGD over each whole global batch,
 * batches taken in the order of a one-replica DistributedSampler.
 */
async function referenceWeights(
  trainLimit: number,
): Promise<{ initial: Float32Array; final: Float32Array }> {
  const model = createNiN({ ...NIN, seed: CONFIG.seed });
  const initial = await flatWeights(model);
  const optimizer = tf.train.sgd(CONFIG.lr);
  const sampler = new DistributedSampler(trainLimit, { rank: 0, worldSize: 1, seed: CONFIG.seed });
  for (let epoch = 0; epoch < CONFIG.epochs; epoch++) {
    sampler.setEpoch(epoch);
    const order = sampler.indices();
    for (let start = 0; start < order.length; start += CONFIG.batchSize) {
      const batch = gatherBatch(DATA.train, order.slice(start, start + CONFIG.batchSize));
      const x = tf.tidy(() =>
        tf.div(
          tf.image.resizeBilinear(
            tf.tensor4d(Float32Array.from(batch.images), [batch.count, 28, 28, 1]),
            [NIN.inputSize, NIN.inputSize],
            false,
            true,
          ),
          255,
        )
      );
      const y = tf.oneHot(tf.tensor1d(Int32Array.from(batch.labels), "int32"), 10);
      optimizer.minimize(() =>
        tf.losses.softmaxCrossEntropy(y, model.apply(x, { training: true }) as tf.Tensor)
      );
      tf.dispose([x, y]);
    }
  }
  const final = await flatWeights(model);
  model.dispose();
  optimizer.dispose();
  return { initial, final };
}

async function flatWeights(model: { getWeights(): tf.Tensor[] }): Promise<Float32Array> {
  const flat = tf.concat(model.getWeights().map((w) => tf.reshape(w, [-1])));
  const weights = await flat.data() as Float32Array;
  flat.dispose();
  return weights;
}

/** ‖Δw − Δw_ref‖ / ‖Δw_ref‖: how far the training updates differ, relative to their size. */
function updateDifference(initial: Float32Array, reference: Float32Array, got: Float32Array) {
  let difference = 0;
  let size = 0;
  for (let i = 0; i < initial.length; i++) {
    difference += (got[i] - reference[i]) ** 2;
    size += (reference[i] - initial[i]) ** 2;
  }
  return Math.sqrt(difference / size);
}

function maxRelativeDifference(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(a[i]));
  }
  return diff / scale;
}

Deno.test("1, 2, 3 and 4 workers reach the weights of a single-process loop over the global batch", async (t) => {
  // 40 examples: batches of 16, 16 and a short 8 per epoch; 42 for 3 workers (no padding),
  // whose shares of a batch of 16 are uneven (6, 5, 5).
  for (const [workers, trainLimit] of [[1, 40], [2, 40], [4, 40], [3, 42]]) {
    await t.step(`${workers} worker(s), ${trainLimit} examples`, async () => {
      const expected = await referenceWeights(trainLimit);
      const epochs: number[] = [];
      const result = await train({
        ...CONFIG,
        distributed: { workers },
        data: { ...DATA, trainLimit },
        onEpoch: (record) => {
          epochs.push(record.epoch);
        },
      });
      assert.deepEqual(epochs, [1, 2]);
      assert.equal(result.history.length, 2);
      const difference = maxRelativeDifference(result.weights, expected.final);
      assert.ok(difference < 1e-5, `max relative difference ${difference}`);
      const updates = updateDifference(expected.initial, expected.final, result.weights);
      assert.ok(updates < 1e-4, `relative difference of the updates ${updates}`);
      for (const record of result.history) {
        assert.ok(record.loss > 0 && Number.isFinite(record.loss));
        assert.ok(record.trainAcc >= 0 && record.trainAcc <= 1);
        assert.ok(record.testAcc >= 0 && record.testAcc <= 1);
        assert.ok(record.examplesPerSec > 0 && record.seconds > 0);
      }
    });
  }
});

Deno.test("the cpu backend trains the same model as WebGPU, within float tolerance", async () => {
  const options = {
    ...CONFIG,
    distributed: { workers: 2 },
    epochs: 1,
    batchSize: 8,
    data: { ...DATA, trainLimit: 16 },
  };
  const gpu = await train(options);
  const cpu = await train({ ...options, backend: "cpu" });
  assert.equal(cpu.device?.backend, "cpu");
  assert.equal(cpu.device?.software, true);
  assert.equal(gpu.device?.backend, "webgpu");
  const difference = maxRelativeDifference(cpu.weights, gpu.weights);
  assert.ok(difference < 1e-5, `max relative difference ${difference}`);
});

Deno.test("a worker that fails while building its replica stops the run with its rank and reason", async () => {
  const started = performance.now();
  await assert.rejects(
    train({
      ...CONFIG,
      data: DATA,
      distributed: {
        workers: 2,
        workerUrl: new URL("./fixtures/faulty_worker.ts?fault=init", import.meta.url),
      },
    }),
    (e: unknown) =>
      e instanceof WorkerError && e.rank === 1 &&
      /^worker 1 failed: backend must be one of webgpu, cpu, got "no-such-backend"$/.test(
        e.message,
      ),
  );
  assert.ok(performance.now() - started < 60_000);
});

Deno.test("a worker that crashes mid-epoch stops every worker; train() rejects instead of hanging", async (t) => {
  for (const allReduce of ["shared", "star"] as const) {
    await t.step(`${allReduce} all-reduce`, async () => {
      const steps: number[] = [];
      const started = performance.now();
      await assert.rejects(
        train({
          ...CONFIG,
          data: { ...DATA, trainLimit: 42 },
          distributed: {
            workers: 3,
            allReduce,
            workerUrl: new URL("./fixtures/faulty_worker.ts?fault=crash", import.meta.url),
          },
          onStep: (progress) => {
            steps.push(progress.step);
          },
        }),
        (e: unknown) =>
          e instanceof WorkerError && e.rank === 1 && /injected crash on rank 1/.test(e.message),
      );
      assert.deepEqual(steps, [1], "only the step before the crash completes");
      assert.ok(performance.now() - started < 60_000);
    });
  }
});

Deno.test("a worker that hangs is named once the step timeout passes; train() rejects", async (t) => {
  // One end-to-end run (whom to blame is tested on its own: watchdog.ts's blameStall).
  for (const allReduce of ["shared"] as const) {
    await t.step(`${allReduce} all-reduce`, async () => {
      const started = performance.now();
      await assert.rejects(
        train({
          ...CONFIG,
          data: { ...DATA, trainLimit: 42 },
          distributed: {
            workers: 3,
            allReduce,
            stepTimeout: 4,
            workerUrl: new URL("./fixtures/faulty_worker.ts?fault=hang", import.meta.url),
          },
        }),
        (e: unknown) =>
          e instanceof WorkerError && e.rank === 1 &&
          /no progress for \d+ s, over the step timeout of 4 s; worker\(s\) 0, 2 waited for it$/
            .test(e.message),
      );
      assert.ok(performance.now() - started < 60_000);
    });
  }
});

Deno.test("aborted while the workers start: train() stops them at once and rejects", async () => {
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort("SIGINT"), 1500);
  // Rank 1 never becomes ready: without the abort, train() would wait out the
  // start-up timeout (600 s).
  await assert.rejects(
    train({
      ...CONFIG,
      data: DATA,
      signal: stop.signal,
      distributed: {
        workers: 2,
        workerUrl: new URL("./fixtures/faulty_worker.ts?fault=hang-init", import.meta.url),
      },
      onStart: () => assert.fail("the workers never all started"),
    }),
    (e: unknown) =>
      e instanceof InterruptedError && e.signal === "SIGINT" &&
      e.message === "interrupted after 0 epoch(s) and 0 step(s); no checkpoint written",
  );
  clearTimeout(timer);
});

/** `tests/fixtures/hang_caller.ts` with `fault` on rank 1; killed if still running after 120 s. */
function runHangCaller(fault: string, permissions: readonly string[]) {
  // A guard, not a speed goal: a process that never ends would hang the test run.
  return runScript("tests/fixtures/hang_caller.ts", [fault], { permissions, killAfterMs: 120_000 });
}

Deno.test("after a step timeout, a library caller's process ends by itself", async () => {
  const { code, signal, stdout } = await runHangCaller("hang", ["--allow-read", "--allow-env"]);
  assert.equal(signal, null, "the process had to be killed: it did not end by itself");
  assert.equal(code, 0);
  assert.match(
    stdout,
    // Whom it blames is tested on its own (blameStall) and end to end above: here, that it ends.
    /^worker \d failed: no progress for \d+ s, over the step timeout of 4 s/m,
  );
});

Deno.test("a worker spinning in a busy loop: train() rejects, warns, and the process ends by itself", async () => {
  // --allow-all: the thread watch needs /proc/self/task to see the thread that did not end.
  const { code, signal, stdout, stderr } = await runHangCaller("spin", ["--allow-all"]);
  assert.equal(signal, null, "the process had to be killed: it did not end by itself");
  assert.equal(code, 0);
  assert.match(
    stdout,
    /^worker \d failed: no progress for \d+ s, over the step timeout of 4 s/m,
  );
  assert.match(
    stderr,
    /^warning: a worker thread did not stop when terminated .*; it runs on until this process exits$/m,
  );
});

Deno.test("a worker's uncaught error reaches the caller as its message, with no stack trace printed", async () => {
  const { code, stdout, stderr } = await runHangCaller("crash", ["--allow-read", "--allow-env"]);
  assert.equal(code, 0);
  assert.equal(stdout, "worker 1 failed: injected crash on rank 1\n");
  assert.doesNotMatch(stderr, /Uncaught|injected crash|^\s+at /m);
});

Deno.test("train() rejects bad options before starting any worker", async () => {
  for (
    const [options, pattern] of [
      [{ distributed: { workers: 0 } }, /workers must be a positive integer, got 0/],
      [{ lr: -0.1 }, /learning rate must be a positive number, got -0.1/],
      [{ lr: NaN }, /learning rate must be a positive number, got NaN/],
      [
        { data: { dataset: "mnist" } },
        /dataset must be one of fashion-mnist, cifar10, got "mnist"/,
      ],
      [
        { distributed: { workers: 4 }, batchSize: 3 },
        /batch size 3 is smaller than the 4 workers/,
      ],
      [
        { distributed: { workers: 2, shards: 3 } },
        /^shards 3 is not a multiple of the 2 workers: each worker computes whole shards$/,
      ],
      [
        { distributed: { shards: 8 }, batchSize: 4 },
        /^shards 8 is larger than the batch size 4: each shard needs/,
      ],
      [{ distributed: { shards: 512 }, batchSize: 1024 }, /^shards must be at most 256, got 512$/],
      [{ distributed: { shards: "4" } }, /^shards must be a positive integer, got "4"$/],
      [{ epochs: 1.5 }, /epochs must be a positive integer/],
      [{ model: { name: "nin", inputSize: 32 } }, /input size must be an integer of at least 67/],
      // Values are shown as given: a string in quotes, so "32" is not mistaken for 32.
      [{ batchSize: "32" }, /^batch size must be a positive integer, got "32"$/],
      [{ distributed: { workers: "2" } }, /^workers must be a positive integer, got "2"$/],
      [{ lr: "0.1" }, /^learning rate must be a positive number, got "0\.1"$/],
      [
        { model: { name: "nin", dropout: "0.1" } },
        /^dropout must be a number in \[0, 1\), got "0\.1"$/,
      ],
      [{ model: { name: "nin", width: "0.5" } }, /^width must be a positive number, got "0\.5"$/],
      [
        { model: { name: "nin", inputSize: "67" } },
        /^input size must be an integer of at least 67, got "67"$/,
      ],
      [{ model: { name: "nin", widht: 0.5 } }, /^model: nin takes no option widht \(it takes/],
      [{ model: "resnet" }, /^model must be one of nin, lenet, resnet18, a \{ name, … \} of one/],
      [{ seed: 1.5 }, /^seed must be a non-negative integer, got 1\.5$/],
      [{ backend: "cuda" }, /^backend must be one of webgpu, cpu, got "cuda"$/],
      [
        { distributed: { allReduce: 2 } },
        /^all-reduce must be one of shared, star, tcp, mpi, got 2$/,
      ],
      [{ distributed: 2 }, /^distributed must be an object, got 2$/],
      [{ checkpoint: { dir: 123 } }, /^checkpoint\.dir must be a non-empty string, got 123$/],
      [
        { checkpoint: { resume: 1 } },
        /^checkpoint\.resume must be true, false or a checkpoint path, got 1$/,
      ],
      [
        { checkpoint: { resume: true } },
        /^resuming from the latest checkpoint needs a checkpoint directory$/,
      ],
      [{ profile: "yes" }, /^profile must be true or false, got "yes"$/],
      [
        { distributed: { stepTimeout: "60" } },
        /^step timeout must be a positive number of seconds, got "60"$/,
      ],
      [{ onEpoch: 3 }, /^onEpoch must be a function, got 3$/],
      [{ preset: "quick", model: "lenet" }, /^the quick preset is for model nin; leave it out/],
    ] as const
  ) {
    await assert.rejects(
      train({ data: DATA, ...(options as TrainOptions) }),
      (e: unknown) => e instanceof UsageError && pattern.test(e.message),
    );
  }
});

Deno.test("a diverging run stops at the step its loss or gradient stops being finite; checkpoints stay finite", async () => {
  await withTempDir(async (dir) => {
    const run = train({
      ...CONFIG,
      lr: 1e30,
      epochs: 3,
      data: DATA,
      checkpoint: { dir, every: 1, keep: 10 },
      distributed: { workers: 2, maxRestarts: 2 }, // divergence is not a failure to restart from
    });
    let error: unknown;
    await run.catch((e) => error = e);
    assert.ok(error instanceof DivergedError, String(error));
    assert.match(
      error.message,
      /^training diverged at epoch 1, step [1-3]: the (loss is (NaN|-?Infinity) on worker [01]|averaged gradient holds (NaN|-?Infinity) \(element \d+\)|weights are no longer finite)$/,
    );
    const files = await listCheckpoints(dir);
    assert.ok(files.length < error.step, "no checkpoint at or after the step that diverged");
    for (const file of files) {
      const state = await readCheckpoint(file.path);
      assert.ok(state.weights.every(Number.isFinite), `${file.path} holds finite weights`);
    }
  });
});

Deno.test("train() rejects in-memory data that does not add up, before starting any worker", async () => {
  const good = imageLikeDataset(8, 9);
  const cases: [unknown, RegExp][] = [
    [{ ...good, count: 9 }, /^data\.train: 6272 image values, but 9 images of 28×28 need 7056$/],
    [
      { ...good, labels: good.labels.map((l, i) => i === 3 ? 200 : l) },
      /^data\.train: label 200 of example 3 is outside 0\.\.9$/,
    ],
    [
      { ...good, count: 0, images: new Uint8Array(0), labels: new Uint8Array(0) },
      /^data\.train: count must be a positive integer, got 0$/,
    ],
    [
      { ...good, images: Array.from(good.images) },
      /^data\.train: images must be a Uint8Array or a Float32Array$/,
    ],
  ];
  for (const [train_, pattern] of cases) {
    await assert.rejects(
      train({ ...CONFIG, data: { train: train_ as Dataset, test: DATA.test } }),
      (e: unknown) => e instanceof DataError && pattern.test(e.message),
    );
  }
});

Deno.test("soak: the workers' tensor counts stay flat over many steps (scripts/soak.ts)", async () => {
  const { code, stdout, stderr } = await runScript("scripts/soak.ts", [
    "--steps",
    "40",
    "--every",
    "10",
  ], {
    permissions: ["--allow-all"],
  });
  assert.equal(code, 0, stderr);
  const counts = [...stdout.matchAll(/^\d+\s+(\d+), (\d+)\s/gm)].map((m) => `${m[1]},${m[2]}`);
  assert.equal(counts.length, 5, stdout); // steps 1, 10, 20, 30, 40
  assert.equal(new Set(counts).size, 1, `tensor counts changed: ${counts.join(" ")}`);
  assert.match(stdout, /^tensors: flat; process RSS /m);
});
