/**
 * d2l §8.6's ResNet-18: its shapes and parameter count, its arithmetic sizes,
 * and a few steps on a fixed batch.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createResNet18, resnet18LayerSizes } from "../lib/model/resnet.ts";
import { stageSummary } from "../lib/model/nin.ts";
import { initBackend } from "../lib/train/shared/backend.ts";
import { Replica } from "../lib/train/worker/replica.ts";
import { imageLikeDataset } from "./helpers.ts";

await initBackend("cpu"); // building models needs no GPU

Deno.test("ResNet-18 has d2l's stage shapes and its 11,178,378 parameters at 96 px", () => {
  const model = createResNet18();
  try {
    const rows = stageSummary(model);
    assert.deepEqual(rows.map((r) => `${r.name} ${r.outputShape.join("×")}`), [
      "b1 24×24×64",
      "b2 24×24×64",
      "b3 12×12×128",
      "b4 6×6×256",
      "b5 3×3×512",
      "pool 512",
      "fc 10",
    ]);
    assert.equal(rows.reduce((sum, r) => sum + r.params, 0), 11_178_378);
    const trainable = model.trainableWeights.reduce((sum, w) => sum + w.read().size, 0);
    assert.equal(trainable, 11_178_378);
  } finally {
    model.dispose();
  }
});

Deno.test("ResNet-18's sizes by arithmetic equal the built model's, for several shapes", () => {
  for (
    const options of [{}, { inputSize: 28, width: 0.125 }, {
      inputSize: 33,
      channels: 3,
      classes: 7,
    }]
  ) {
    const model = createResNet18(options);
    try {
      const sizes = resnet18LayerSizes(options);
      assert.equal(
        sizes.reduce((sum, l) => sum + l.params, 0),
        model.countParams(),
        JSON.stringify(options),
      );
      for (const size of sizes) {
        const shape = model.getLayer(size.name).outputShape as number[];
        assert.equal(shape.slice(1).reduce((a, b) => a * b, 1), size.outputValues, size.name);
      }
    } finally {
      model.dispose();
    }
  }
});

Deno.test("ResNet-18 at the CPU preset's size: finite, and the loss falls over a few steps on one batch", async () => {
  const replica = new Replica({
    model: createResNet18({ inputSize: 28, width: 0.125, seed: 1 }),
    optimizer: { name: "sgd", momentum: 0.9 },
  });
  try {
    const data = imageLikeDataset(8, 7);
    const losses: number[] = [];
    for (let step = 0; step < 4; step++) {
      const local = await replica.computeGradients(data);
      assert.ok(local.gradients.every(Number.isFinite), `step ${step}`);
      losses.push(local.lossSum / local.count);
      await replica.applyGradients(local.gradients, { lr: 0.05 });
    }
    assert.ok(losses.every(Number.isFinite), losses.join(", "));
    assert.ok(losses.at(-1)! < 0.5 * losses[0], losses.join(", "));
  } finally {
    replica.dispose();
  }
});
