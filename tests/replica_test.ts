import assert from "node:assert/strict";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import * as tfl from "npm:@tensorflow/tfjs-layers@4.22.0";
import { weightedAverage } from "../lib/collective/all_reduce.ts";
import type { Batch } from "../lib/data/batches.ts";
import { initBackend } from "../lib/train/shared/backend.ts";
import { createNiN } from "../lib/model/nin.ts";
import { Replica } from "../lib/train/worker/replica.ts";
import { weightsChecksum } from "../lib/util/sha256.ts";
import { mulberry32 } from "../lib/util/random.ts";

await initBackend("webgpu");

const MODEL = { inputSize: 67, width: 0.125, dropout: 0, seed: 3 };

function randomBatch(count: number, seed: number): Batch {
  const next = mulberry32(seed);
  return {
    images: Uint8Array.from({ length: count * 784 }, () => next() & 0xff),
    labels: Uint8Array.from({ length: count }, () => next() % 10),
    count,
    rows: 28,
    cols: 28,
  };
}

function slice(batch: Batch, start: number, end: number): Batch {
  return {
    images: batch.images.slice(start * 784, end * 784),
    labels: batch.labels.slice(start, end),
    count: end - start,
    rows: 28,
    cols: 28,
  };
}

function maxRelativeDifference(a: Float32Array, b: Float32Array): number {
  let scale = 0;
  let diff = 0;
  for (let i = 0; i < a.length; i++) {
    scale = Math.max(scale, Math.abs(a[i]));
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
  }
  return diff / scale;
}

Deno.test("a Replica step equals one step of tfjs' own SGD on the same batch", async () => {
  const replica = new Replica({ model: createNiN(MODEL) });
  const reference = new Replica({ model: createNiN(MODEL) }); // used only for its model
  try {
    const batch = randomBatch(8, 1);
    const local = await replica.computeGradients(batch);
    await replica.applyGradients(local.gradients, { lr: 0.1 });

    const optimizer = tf.train.sgd(0.1);
    const x = tf.tidy(() =>
      tf.div(
        tf.image.resizeBilinear(
          tf.tensor4d(Float32Array.from(batch.images), [8, 28, 28, 1]),
          [67, 67],
          false,
          true,
        ),
        255,
      )
    );
    const y = tf.oneHot(tf.tensor1d(Int32Array.from(batch.labels), "int32"), 10);
    const loss = optimizer.minimize(
      () =>
        tf.losses.softmaxCrossEntropy(y, reference.model.apply(x, { training: true }) as tf.Tensor),
      true,
    )!;
    assert.ok(Math.abs((await loss.data())[0] - local.lossSum / 8) < 1e-5);
    tf.dispose([x, y, loss]);
    optimizer.dispose();
    assert.deepEqual(await replica.getWeights(), await reference.getWeights());
  } finally {
    replica.dispose();
    reference.dispose();
  }
});

Deno.test("the example-weighted average of shard gradients is the gradient of the whole batch", async () => {
  const replica = new Replica({ model: createNiN(MODEL) });
  try {
    const batch = randomBatch(7, 2);
    const whole = await replica.computeGradients(batch);
    const small = await replica.computeGradients(slice(batch, 0, 2));
    const large = await replica.computeGradients(slice(batch, 2, 7));
    const averaged = weightedAverage([
      { data: small.gradients, weight: small.count },
      { data: large.gradients, weight: large.count },
    ]);
    assert.ok(maxRelativeDifference(whole.gradients, averaged) < 1e-4);
    assert.ok(Math.abs(whole.lossSum - small.lossSum - large.lossSum) < 1e-4);
    assert.equal(whole.correct, small.correct + large.correct);
    // An unweighted mean of the two shard gradients is measurably different.
    const unweighted = weightedAverage([
      { data: small.gradients, weight: 1 },
      { data: large.gradients, weight: 1 },
    ]);
    assert.ok(maxRelativeDifference(whole.gradients, unweighted) > 1e-2);
  } finally {
    replica.dispose();
  }
});

Deno.test("dropout masks are fixed by the seed", async () => {
  const replica = new Replica({ model: createNiN({ ...MODEL, dropout: 0.5 }) });
  try {
    const batch = randomBatch(4, 3);
    const a = await replica.computeGradients(batch, { dropoutSeed: 11 });
    const b = await replica.computeGradients(batch, { dropoutSeed: 11 });
    const c = await replica.computeGradients(batch, { dropoutSeed: 12 });
    assert.deepEqual(a.gradients, b.gradients);
    assert.notDeepEqual(a.gradients, c.gradients);
  } finally {
    replica.dispose();
  }
});

Deno.test("training steps, evaluation and weight reads leak no tensors", async () => {
  const replica = new Replica({ model: createNiN({ ...MODEL, dropout: 0.5 }) });
  try {
    const batch = randomBatch(6, 4);
    const step = async (seed: number) => {
      const local = await replica.computeGradients(batch, { dropoutSeed: seed });
      await replica.applyGradients(local.gradients, { lr: 0.1 });
      await replica.countCorrect(batch);
      await replica.getWeights();
    };
    await step(0);
    const before = tf.memory().numTensors;
    for (let i = 1; i <= 3; i++) await step(i);
    assert.equal(tf.memory().numTensors, before);
  } finally {
    replica.dispose();
  }
});

Deno.test("setWeights and getWeights round-trip; checksums tell replicas apart", async () => {
  const a = new Replica({ model: createNiN(MODEL) });
  const b = new Replica({ model: createNiN({ ...MODEL, seed: 4 }) });
  try {
    const weights = await a.getWeights();
    assert.equal(weights.length, a.numParams);
    assert.equal(a.numParams, a.model.countParams());
    assert.notEqual(await weightsChecksum(weights), await weightsChecksum(await b.getWeights()));
    b.setWeights(weights);
    assert.equal(await weightsChecksum(await b.getWeights()), await weightsChecksum(weights));
    assert.throws(() => b.setWeights(new Float32Array(3)), RangeError);
  } finally {
    a.dispose();
    b.dispose();
  }
});

Deno.test("the model is a plain tfjs LayersModel", () => {
  const replica = new Replica({ model: createNiN(MODEL) });
  try {
    assert.ok(replica.model instanceof tfl.LayersModel);
  } finally {
    replica.dispose();
  }
});
