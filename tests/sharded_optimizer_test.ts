/**
 * The sharded optimizer (ZeRO stage 1, `distributed.shardOptimizer`, on by
 * default with the shared all-reduce): the same bits as every worker running
 * the whole update, a whole optimizer state in checkpoints, resumes with
 * another worker count, and 1/N of the state per worker.
 */

import assert from "node:assert/strict";
import { train } from "../lib/train/coordinator/train.ts";
import { listCheckpoints, readCheckpoint } from "../lib/train/shared/checkpoint.ts";
import type { OptimizerState } from "../lib/optim/mod.ts";
import type { TrainOptions } from "../lib/train/shared/options.ts";
import { initBackend } from "../lib/train/shared/backend.ts";
import { Replica } from "../lib/train/worker/replica.ts";
import { createBatchNormModel } from "./fixtures/bn_model.ts";
import { imageLikeDataset, withTempDir } from "./helpers.ts";
import { trainInterrupted } from "./train_helpers.ts";

await initBackend("cpu"); // to build models in this thread

// Trainable weights, batch-normalisation statistics and a frozen layer: the
// chunks of the averaged vector cut across all three kinds.
const model = () => createBatchNormModel({ seed: 2, frozen: true });
const RUN = {
  data: { train: imageLikeDataset(60, 1), test: imageLikeDataset(20, 2) },
  batchSize: 12,
  epochs: 1,
  lr: 0.01,
  seed: 5,
  backend: "webgpu",
} as const satisfies TrainOptions;

const OPTIMIZERS = {
  "SGD, Nesterov momentum, weight decay": {
    name: "sgd",
    momentum: 0.9,
    nesterov: true,
    weightDecay: 1e-3,
    workers: 2,
  },
  "Adam, weight decay": { name: "adam", weightDecay: 1e-3, workers: 3 }, // uneven chunks
} as const;

Deno.test("sharded and unsharded optimizers give the same weights and the same checkpointed state", async (t) => {
  for (const [label, { workers, ...optimizer }] of Object.entries(OPTIMIZERS)) {
    {
      await t.step(`${label}, ${workers} workers`, async () => {
        const results: { checksum: string; state: OptimizerState }[] = [];
        for (const shardOptimizer of [false, true]) {
          await withTempDir(async (dir) => {
            let sharded: boolean | undefined;
            const result = await train({
              ...RUN,
              model: model(),
              optimizer,
              distributed: { workers, shards: 6, shardOptimizer },
              checkpoint: { dir },
              onStart: (info) => sharded = info.options.distributed.shardOptimizer,
            });
            assert.equal(sharded, shardOptimizer, "the workers shard as asked"); // or they refuse
            const [file] = await listCheckpoints(dir);
            assert.equal(file.epochsDone, 1, "an end-of-epoch checkpoint");
            const saved = await readCheckpoint(file.path);
            results.push({ checksum: result.checksum, state: saved.optimizer.state! });
          });
        }
        const [whole, sharded] = results;
        assert.equal(sharded.checksum, whole.checksum); // the SHA-256 of every weight
        assert.equal(sharded.state.step, whole.state.step);
        assert.deepEqual(Object.keys(sharded.state.slots), Object.keys(whole.state.slots));
        for (const [name, slot] of Object.entries(whole.state.slots)) {
          assert.ok(slot.some((v) => v !== 0), `slot ${name} holds what the steps left`);
          const same = new Uint32Array(slot.buffer).every((bits, i) =>
            bits === new Uint32Array(sharded.state.slots[name].buffer)[i]
          );
          assert.ok(same, `slot ${name}: the gathered state has the unsharded bits`);
        }
      });
    }
  }
});

Deno.test("a sharded Adam run interrupted with 2 workers resumes with 3, taking optimizer and schedule from the checkpoint, and ends as the 3-worker run does", async () => {
  const run = {
    ...RUN,
    model: { name: "nin", inputSize: 67, width: 0.125, dropout: 0.5 },
    optimizer: { name: "adam" },
    schedule: { name: "step", everyEpochs: 1, gamma: 0.5 },
    lr: 0.002,
    epochs: 2,
    data: { train: imageLikeDataset(48, 3), test: imageLikeDataset(8, 4) },
    batchSize: 12,
  } as const satisfies TrainOptions;
  const straight = await train({ ...run, distributed: { workers: 3, shards: 6 } });
  await withTempDir(async (dir) => {
    const saved = await trainInterrupted({ ...run, distributed: { workers: 2, shards: 6 } }, {
      epoch: 1,
      step: 2,
      dir,
    });
    const state = await readCheckpoint(saved.path);
    assert.equal(state.optimizer.name, "adam");
    assert.ok(saved.epochsDone < 2, "stopped before the end");
    assert.equal(state.optimizer.state!.step, 4 * saved.epochsDone + saved.stepsDone); // 4 per epoch
    for (const slot of Object.values(state.optimizer.state!.slots)) {
      assert.equal(slot.length, straight.weights.length, "the whole state, gathered");
      assert.ok(slot.some((value) => value !== 0), "the state holds what the steps left");
    }
    const resumed = await train({
      ...run,
      optimizer: undefined,
      schedule: undefined,
      lr: undefined,
      distributed: { workers: 3, shards: 6 },
      checkpoint: { dir, resume: true },
    });
    assert.equal(resumed.checksum, straight.checksum);
  });
});

Deno.test("a sharded replica keeps the optimizer state of its chunk only", () => {
  const replica = new Replica({ model: model(), optimizer: { name: "adam" } });
  const whole = replica.optimizerState().slots.m.length;
  assert.equal(whole, replica.numParams);
  const n = replica.numReduced;
  let kept = 0;
  for (let rank = 0; rank < 4; rank++) {
    const sharded = new Replica({ model: model(), optimizer: { name: "adam" } });
    sharded.shardOptimizer({
      start: Math.floor(rank * n / 4),
      end: Math.floor((rank + 1) * n / 4),
    });
    const { m, v } = sharded.optimizerState().slots;
    assert.equal(m.length, v.length);
    assert.ok(m.length <= Math.ceil(n / 4), `rank ${rank} keeps ${m.length} of ${whole}`);
    kept += m.length;
    sharded.dispose();
  }
  assert.equal(kept, whole, "the chunks' states together are the whole state");
  replica.dispose();
});
