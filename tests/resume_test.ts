import assert from "node:assert/strict";
import { DataError, InterruptedError, WorkerError } from "../lib/errors.ts";
import {
  encodeCheckpoint,
  listCheckpoints,
  readCheckpoint,
} from "../lib/train/shared/checkpoint.ts";
import { train } from "../lib/train/coordinator/train.ts";
import { imageLikeDataset, withTempDir } from "./helpers.ts";
import { trainInterrupted } from "./train_helpers.ts";

// Dropout on: resuming must also reproduce the dropout masks.
const RUN = {
  model: { name: "nin", inputSize: 67, width: 0.125, dropout: 0.5 },
  lr: 0.1,
  seed: 11,
  distributed: { workers: 2 },
  batchSize: 8,
  epochs: 2,
  data: { train: imageLikeDataset(48, 3), test: imageLikeDataset(8, 4) }, // 6 steps per epoch
} as const;

const reference = await train(RUN);

Deno.test("a run interrupted mid-epoch and resumed ends with the uninterrupted run's weights", async () => {
  await withTempDir(async (dir) => {
    const interrupt = new AbortController();
    const error = await train({
      ...RUN,
      checkpoint: { dir },
      signal: interrupt.signal,
      onStep: (p) => {
        if (p.epoch === 1 && p.step === 2) interrupt.abort();
      },
    }).then(() => undefined, (e) => e);
    assert.ok(error instanceof InterruptedError, String(error));
    const [saved] = await listCheckpoints(dir);
    assert.equal(saved.epochsDone, 0);
    assert.ok(saved.stepsDone >= 2 && saved.stepsDone < 6, `stopped at step ${saved.stepsDone}`);
    assert.equal(error.checkpoint, saved.path);

    let resumedFrom = "";
    const resumed = await train({
      ...RUN,
      checkpoint: { dir, resume: true },
      onStart: (info) => resumedFrom = info.resumedFrom?.path ?? "",
    });
    assert.equal(resumedFrom, saved.path);
    assert.equal(resumed.checksum, reference.checksum); // the SHA-256 of every weight
    assert.deepEqual(resumed.history.map((r) => r.epoch), [1, 2]);
    assert.equal(resumed.history[1].testAcc, reference.history[1].testAcc);
  });
});

Deno.test("resuming from an end-of-epoch checkpoint, with more epochs than first planned", async () => {
  await withTempDir(async (dir) => {
    await train({ ...RUN, epochs: 1, checkpoint: { dir } });
    const [saved] = await listCheckpoints(dir);
    assert.deepEqual([saved.epochsDone, saved.stepsDone], [1, 0]);
    const resumed = await train({ ...RUN, checkpoint: { dir, resume: saved.path } });
    assert.equal(resumed.checksum, reference.checksum); // the SHA-256 of every weight
  });
});

Deno.test("a worker killed mid-epoch: every worker restarts from the last checkpoint and the run ends as if uninterrupted", async (t) => {
  for (const checkpointDir of [true, false]) {
    await t.step(checkpointDir ? "checkpoints on disk" : "checkpoints kept in memory", async () => {
      await withTempDir(async (dir) => {
        const restarts: string[] = [];
        const result = await train({
          ...RUN,
          checkpoint: { dir: checkpointDir ? dir : undefined, every: 1 },
          distributed: {
            workers: 2,
            maxRestarts: 1,
            workerUrl: new URL("./fixtures/faulty_worker.ts?fault=crash-once", import.meta.url),
          },
          onRestart: ({ error, from }) => restarts.push(`${error.message} → ${from}`),
        });
        assert.equal(result.restarts, 1);
        assert.equal(restarts.length, 1);
        assert.match(
          restarts[0],
          /^worker 1 failed: .*injected crash on rank 1 → epoch 1, step 1$/,
        );
        assert.equal(result.checksum, reference.checksum); // the SHA-256 of every weight
      });
    });
  }
});

Deno.test("past --max-restarts: one clear error, and the checkpoints are still there", async () => {
  await withTempDir(async (dir) => {
    let restarts = 0;
    await assert.rejects(
      train({
        ...RUN,
        checkpoint: { dir, every: 1 },
        distributed: {
          workers: 2,
          maxRestarts: 1,
          workerUrl: new URL("./fixtures/faulty_worker.ts?fault=crash", import.meta.url),
        },
        onRestart: () => restarts++,
      }),
      (e: unknown) => e instanceof WorkerError && /injected crash on rank 1/.test(e.message),
    );
    assert.equal(restarts, 1);
    const files = await listCheckpoints(dir);
    assert.ok(files.length > 0);
    // The first group checkpointed step 1; the restarted one, which starts there, step 2 —
    // each crashes instead of reporting its own second step.
    const last = await readCheckpoint(files.at(-1)!.path);
    assert.deepEqual([last.epochsDone, last.stepsDone], [0, 2]);
  });
});

Deno.test("a checkpoint of another model shape is refused before training", async () => {
  await withTempDir(async (dir) => {
    await train({ ...RUN, epochs: 1, checkpoint: { dir } });
    const [saved] = await listCheckpoints(dir);
    const state = await readCheckpoint(saved.path);
    // Claim a different width, as if the file came from another run's directory.
    const { encodeCheckpoint } = await import("../lib/train/shared/checkpoint.ts");
    const other = {
      ...state,
      config: {
        ...state.config,
        model: { ...state.config.model, options: { ...state.config.model.options, width: 0.25 } },
      },
    };
    await Deno.writeFile(saved.path, await encodeCheckpoint(other));
    await assert.rejects(
      train({ ...RUN, model: undefined, checkpoint: { dir, resume: true } }),
      /holds 36646 weights, but nin as it records it has \d+: it is not a checkpoint of that model$/,
    );
  });
});

Deno.test("a preset's values are defaults, not settings given: a run with --preset quick --batch-size 16 resumes with --preset quick", async () => {
  await withTempDir(async (dir) => {
    const data = { train: imageLikeDataset(48, 5), test: imageLikeDataset(8, 6) };
    const first = { preset: "quick", batchSize: 16, epochs: 1, data, checkpoint: { dir } } as const;
    await train(first);
    const resumed = await train({
      preset: "quick",
      data,
      checkpoint: { dir, resume: true },
      epochs: 2,
    });
    assert.deepEqual(resumed.history.map((r) => r.epoch), [1, 2]);
    const [saved] = (await listCheckpoints(dir)).slice(-1);
    const state = await readCheckpoint(saved.path);
    assert.equal(state.config.batchSize, 16, "the checkpoint's batch size, not the preset's 128");
    assert.equal(
      state.config.model.options.inputSize,
      99,
      "the preset's input size, as first trained",
    );
    assert.equal(state.config.model.options.head, "zero", "the preset's head, as first trained");
  });
});

Deno.test("a checkpoint that stopped past the end of an epoch of this data is refused", async () => {
  await withTempDir(async (dir) => {
    await train({ ...RUN, epochs: 1, checkpoint: { dir } });
    const [saved] = await listCheckpoints(dir);
    const state = await readCheckpoint(saved.path);
    const lying = `${dir}/lying.msgpack`;
    await Deno.writeFile(lying, await encodeCheckpoint({ ...state, stepsDone: 999 }));
    await assert.rejects(
      train({ ...RUN, checkpoint: { dir, resume: lying } }),
      (e: unknown) =>
        e instanceof DataError &&
        e.message ===
          `${lying} stopped after step 999 of an epoch that has 6: it does not belong to this data set`,
    );
  });
});

const OPTIMIZED_RUNS = {
  "SGD with Nesterov momentum, weight decay and a cosine schedule with warm-up": {
    optimizer: { name: "sgd", momentum: 0.9, nesterov: true, weightDecay: 1e-4 },
    schedule: { name: "cosine", warmupEpochs: 0.5 },
    lr: 0.05,
    slots: ["momentum"],
  },
  // Adam with a step schedule, resumed without naming either: tests/sharded_optimizer_test.ts.
} as const;

Deno.test("with momentum: interrupted, resumed, the same bits as uninterrupted", async (t) => {
  for (const [name, { slots, ...settings }] of Object.entries(OPTIMIZED_RUNS)) {
    await t.step(name, async () => {
      const run = { ...RUN, ...settings };
      const straight = await train(run);
      assert.notDeepEqual(straight.weights, reference.weights, "the optimizer made a difference");
      await withTempDir(async (dir) => {
        const saved = await trainInterrupted(run, { epoch: 1, step: 2, dir });
        const state = await readCheckpoint(saved.path);
        assert.equal(state.optimizer.name, settings.optimizer.name);
        assert.ok(saved.epochsDone === 0 && saved.stepsDone < 6, "stopped within the epoch");
        assert.equal(state.optimizer.state?.step, saved.stepsDone);
        assert.deepEqual(Object.keys(state.optimizer.state!.slots).sort(), [...slots]);
        for (const slot of Object.values(state.optimizer.state!.slots)) {
          assert.equal(slot.length, straight.weights.length);
          assert.ok(slot.some((value) => value !== 0), "the state holds what the steps left");
        }
        // Resumed without naming the optimizer: the checkpoint's is used.
        const resumed = await train({
          ...RUN,
          optimizer: undefined,
          schedule: undefined,
          lr: undefined,
          checkpoint: { dir, resume: true },
        });
        assert.equal(resumed.checksum, straight.checksum); // the SHA-256 of every weight
      });
    });
  }
});

Deno.test("resuming with another optimizer than the checkpoint's is refused", async () => {
  await withTempDir(async (dir) => {
    await train({
      ...RUN,
      epochs: 1,
      checkpoint: { dir },
      optimizer: { name: "sgd", momentum: 0.9 },
    });
    await assert.rejects(
      train({ ...RUN, checkpoint: { dir, resume: true }, optimizer: "adam" }),
      (e: unknown) =>
        e instanceof Error && e.name === "UsageError" &&
        /was trained with optimizer \{"momentum":0\.9,"name":"sgd"\}, not \{"name":"adam"\}: leave optimizer out/
          .test(e.message),
    );
  });
});

Deno.test("with Adam, a worker killed mid-epoch: the restarted workers continue its moments, as if uninterrupted", async () => {
  const run = { ...RUN, optimizer: { name: "adam" }, lr: 0.002 } as const;
  const straight = await train(run);
  for (const checkpointDir of [undefined, "disk"]) {
    await withTempDir(async (dir) => {
      const result = await train({
        ...run,
        checkpoint: { dir: checkpointDir && dir, every: 1 },
        distributed: {
          workers: 2,
          maxRestarts: 1,
          workerUrl: new URL("./fixtures/faulty_worker.ts?fault=crash-once", import.meta.url),
        },
      });
      assert.equal(result.restarts, 1);
      // Checksums, not the arrays: a failing deepEqual of 36,646 floats takes minutes to print.
      assert.equal(result.checksum, straight.checksum);
    });
  }
});
