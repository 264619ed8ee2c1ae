/**
 * Batch normalisation, frozen weights and weights a step does not use, in
 * data-parallel training.
 *
 * Semantics: a training forward pass on each shard computes that shard's
 * batch statistics and the moving mean and variance they move to; those
 * travel with the shard's gradient through the all-reduce, so every replica
 * takes their example-weighted average in shard order — the same bits
 * whichever worker computed which shard.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type * as tfl from "npm:@tensorflow/tfjs-layers@4.22.0";
import { train } from "../lib/train/coordinator/train.ts";
import { readCheckpoint } from "../lib/train/shared/checkpoint.ts";
import { initBackend } from "../lib/train/shared/backend.ts";
import { Replica } from "../lib/train/worker/replica.ts";
import { flatWeightsOf } from "../lib/model/registry.ts";
import { imageLikeDataset, withTempDir } from "./helpers.ts";
import { trainInterrupted } from "./train_helpers.ts";
import { createBatchNormModel, createTwoHeadModel } from "./fixtures/bn_model.ts";

await initBackend("cpu"); // to build models in this thread

const DATA = { train: imageLikeDataset(60, 1), test: imageLikeDataset(20, 2) };
const RUN = {
  data: DATA,
  batchSize: 10, // shards of 3, 3, 2 and 2: the order of the terms shows in the bits
  epochs: 2,
  lr: 0.05,
  seed: 3,
  optimizer: { name: "sgd", momentum: 0.9 },
  backend: "webgpu",
} as const;

/** Where each named weight sits in the flat vector of `model.getWeights()`. */
function offsets(model: tfl.LayersModel): Map<string, { offset: number; size: number }> {
  const out = new Map<string, { offset: number; size: number }>();
  let offset = 0;
  for (const w of model.weights) {
    const size = w.shape.reduce((a: number, b) => a * (b as number), 1);
    out.set(w.originalName, { offset, size });
    offset += size;
  }
  return out;
}

/** The one weight of `where` whose name ends with `suffix`. */
function named(
  where: Map<string, { offset: number; size: number }>,
  suffix: string,
): { offset: number; size: number } {
  const matches = [...where].filter(([name]) => name.endsWith(suffix));
  assert.equal(matches.length, 1, `${suffix} in ${[...where.keys()].join(", ")}`);
  return matches[0][1];
}

function part(weights: Float32Array, at: { offset: number; size: number }): number[] {
  return Array.from(weights.subarray(at.offset, at.offset + at.size));
}

Deno.test("batch normalisation with shards: 4: 1, 2 and 4 workers give one SHA-256, statistics included", async () => {
  const model = createBatchNormModel({ seed: 1 });
  const where = offsets(model);
  const checksums = new Set<string>();
  let weights: Float32Array | undefined;
  for (const workers of [1, 2, 4]) {
    // train() also compares every replica's checksum (weights and statistics) after each epoch.
    const result = await train({ ...RUN, model, distributed: { workers, shards: 4 } });
    checksums.add(result.checksum);
    weights = result.weights;
    assert.ok(result.history[1].loss < result.history[0].loss, JSON.stringify(result.history));
  }
  assert.equal(checksums.size, 1, [...checksums].join(" "));
  const mean = part(weights!, named(where, "/moving_mean"));
  assert.equal(mean.length, 4);
  assert.ok(mean.every((m) => Number.isFinite(m) && m !== 0), `moving mean ${mean}`);
  model.dispose();
});

Deno.test("batch normalisation: interrupted and resumed, the uninterrupted run's bits", async () => {
  const model = createBatchNormModel({ seed: 2 });
  const options = { ...RUN, model, distributed: { workers: 2, shards: 4 } };
  const reference = await train(options);
  await withTempDir(async (dir) => {
    const saved = await trainInterrupted(options, { epoch: 1, step: 3, dir });
    assert.equal((await readCheckpoint(saved.path)).weights.length, model.countParams());
    const resumed = await train({ ...options, checkpoint: { dir, resume: true } });
    assert.equal(resumed.checksum, reference.checksum);
  });
  model.dispose();
});

Deno.test("the averaged vector holds the trainable weights' gradient and the statistics, not frozen weights", async () => {
  const model = createBatchNormModel({ seed: 3, frozen: true });
  const trainable = model.trainableWeights.reduce((sum, w) => sum + w.read().size, 0);
  const replica = new Replica({ model });
  assert.equal(replica.numWeights, model.countParams());
  assert.equal(replica.numParams, trainable);
  assert.equal(replica.numReduced, trainable + 4 + 4); // moving mean and variance of 4 channels
  const batch = { ...DATA.train, count: 10, images: DATA.train.images.subarray(0, 7840) };
  const before = await replica.getWeights();
  const local = await replica.computeGradients({
    ...batch,
    labels: DATA.train.labels.subarray(0, 10),
  });
  assert.equal(local.gradients.length, replica.numReduced);
  // The forward pass moved the statistics, but the replica's own are as before it.
  assert.deepEqual(await flatWeightsOf(model), before);
  replica.dispose();
});

Deno.test("frozen weights are not updated, and are checkpointed and returned", async () => {
  const model = createBatchNormModel({ seed: 4, frozen: true });
  const where = offsets(model);
  const start = await flatWeightsOf(model);
  let params = 0;
  const result = await train({
    ...RUN,
    model,
    distributed: { workers: 2 },
    onStart: (info) => params = info.numParams,
  });
  assert.equal(params, model.trainableWeights.reduce((sum, w) => sum + w.read().size, 0));
  assert.equal(result.weights.length, start.length);
  for (const name of ["frozen/kernel", "frozen/bias"]) {
    const at = named(where, name);
    assert.deepEqual(part(result.weights, at), part(start, at), name);
  }
  const conv = where.get(model.layers[0].weights[0].originalName)!;
  assert.notDeepEqual(part(result.weights, conv), part(start, conv));
  model.dispose();
});

Deno.test("weights a step does not use: each head is trained on its own steps, the replicas agree", async () => {
  const module = new URL("./fixtures/bn_model.ts", import.meta.url);
  const model = createTwoHeadModel({ seed: 5 });
  const where = offsets(model);
  const start = await flatWeightsOf(model);
  // One step by hand: the head the step does not use has a zero gradient.
  const replica = new Replica({ model });
  const batch = {
    ...DATA.train,
    count: 4,
    images: DATA.train.images.subarray(0, 4 * 784),
    labels: DATA.train.labels.subarray(0, 4),
  };
  const { gradients } = await replica.computeGradients(batch); // the first call uses head_a
  const [a, b] = ["head_a/kernel", "head_b/kernel"].map((name) => named(where, name));
  assert.ok(part(gradients, a).some((g) => g !== 0));
  assert.ok(part(gradients, b).every((g) => g === 0));
  replica.dispose();

  for (const optimizer of [{ name: "sgd", momentum: 0.9 }, { name: "adam" }] as const) {
    const result = await train({
      ...RUN,
      model: { module, export: "createTwoHeadModel" },
      optimizer,
      lr: optimizer.name === "adam" ? 0.01 : 0.05,
      distributed: { workers: 2 },
      batchSize: 8,
    });
    assert.ok(result.history.every((r) => Number.isFinite(r.loss)), JSON.stringify(result.history));
    for (const head of [a, b]) assert.notDeepEqual(part(result.weights, head), part(start, head));
  }
  tf.disposeVariables();
});
