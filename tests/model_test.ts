import assert from "node:assert/strict";
import type * as tfl from "npm:@tensorflow/tfjs-layers@4.22.0";
import {
  createNiN,
  MIN_INPUT_SIZE,
  ninLayerSizes,
  stageSummary,
  ZERO_HEAD_BIAS,
} from "../lib/model/nin.ts";
import { createLeNet, lenetLayerSizes } from "../lib/model/lenet.ts";
import { initBackend } from "../lib/train/shared/backend.ts";
import { UsageError } from "../lib/errors.ts";

await initBackend("cpu"); // building models and reading weights needs no GPU

async function kernels(model: tfl.LayersModel) {
  const out = [];
  for (const w of model.weights) {
    out.push({ name: w.name, shape: w.shape, values: await w.read().data() as Float32Array });
  }
  return out;
}

Deno.test("NiN has d2l's layer shapes and 1,992,166 parameters at 224×224", () => {
  const model = createNiN();
  try {
    assert.equal(model.countParams(), 1_992_166);
    const rows = stageSummary(model).map((r) => `${r.name} ${r.outputShape.join("×")}`);
    assert.deepEqual(rows, [
      "nin1 54×54×96",
      "maxpool1 26×26×96",
      "nin2 26×26×256",
      "maxpool2 12×12×256",
      "nin3 12×12×384",
      "maxpool3 5×5×384",
      "dropout 5×5×384",
      "nin4 5×5×10",
      "avgpool 1×1×10",
      "flatten 10",
    ]);
    assert.equal(stageSummary(model).reduce((sum, r) => sum + r.params, 0), 1_992_166);
  } finally {
    model.dispose();
  }
});

Deno.test("NiN's smaller configurations: input size and width multiplier", () => {
  const model = createNiN({ inputSize: MIN_INPUT_SIZE, width: 0.5 });
  try {
    const shapes = stageSummary(model).map((r) => r.outputShape.join("×"));
    assert.deepEqual(shapes.slice(0, 6), [
      "15×15×48",
      "7×7×48",
      "7×7×128",
      "3×3×128",
      "3×3×192",
      "1×1×192",
    ]);
    assert.deepEqual(shapes.slice(-2), ["1×1×10", "10"]);
  } finally {
    model.dispose();
  }
  assert.throws(
    () => createNiN({ inputSize: 66 }),
    (e: unknown) => e instanceof UsageError && /at least 67/.test(e.message),
  );
  assert.throws(() => createNiN({ width: 0 }), UsageError);
  assert.throws(() => createNiN({ dropout: 1 }), UsageError);
});

Deno.test("NiN kernels are He-normal (std √(2/fan-in)), biases zero, and the seed fixes them", async () => {
  const a = createNiN({ inputSize: 96, seed: 5 });
  const b = createNiN({ inputSize: 96, seed: 5 });
  const c = createNiN({ inputSize: 96, seed: 6 });
  try {
    const [ka, kb, kc] = [await kernels(a), await kernels(b), await kernels(c)];
    for (const [i, w] of ka.entries()) {
      assert.deepEqual(w.values, kb[i].values, `${w.name} differs between equal seeds`);
      if (w.shape.length === 1) {
        assert.ok(w.values.every((v) => v === 0), `${w.name} is not zero`);
        continue;
      }
      assert.notDeepEqual(w.values, kc[i].values, `${w.name} equal across seeds`);
      const [kh, kw, cin] = w.shape as number[];
      const expectedStd = Math.sqrt(2 / (kh * kw * cin));
      const mean = w.values.reduce((s, v) => s + v, 0) / w.values.length;
      const std = Math.sqrt(w.values.reduce((s, v) => s + (v - mean) ** 2, 0) / w.values.length);
      if (w.values.length >= 10_000) {
        assert.ok(
          Math.abs(std / expectedStd - 1) < 0.03,
          `${w.name}: std ${std} vs ${expectedStd}`,
        );
        assert.ok(Math.abs(mean) < 0.05 * expectedStd, `${w.name}: mean ${mean}`);
      }
    }
  } finally {
    [a, b, c].forEach((m) => m.dispose());
  }
});

Deno.test("NiN can use Glorot-uniform kernels instead", async () => {
  const model = createNiN({ inputSize: 96, init: "glorot-uniform" });
  try {
    const [first] = await kernels(model);
    const [kh, kw, cin, cout] = first.shape as number[];
    const limit = Math.sqrt(6 / (kh * kw * cin + kh * kw * cout));
    assert.ok(first.values.every((v) => Math.abs(v) <= limit));
    assert.ok(Math.max(...first.values) > 0.9 * limit);
  } finally {
    model.dispose();
  }
});

Deno.test("NiN's zero head: the class-score layer starts at zero weights and a positive bias, every other weight as with a random head", async () => {
  const random = createNiN({ inputSize: 99, width: 0.125, seed: 3 });
  const zero = createNiN({ inputSize: 99, width: 0.125, seed: 3, head: "zero" });
  try {
    const [kr, kz] = [await kernels(random), await kernels(zero)];
    const [headKernel, headBias] = kz.slice(-2);
    assert.match(headKernel.name, /nin4_mlp2/);
    assert.ok(headKernel.values.every((v) => v === 0), "head kernel is zero");
    assert.deepEqual([...headBias.values], Array(10).fill(Math.fround(ZERO_HEAD_BIAS)));
    assert.ok(kr.at(-2)!.values.some((v) => v !== 0), "the random head is not zero");
    for (const [i, w] of kz.slice(0, -2).entries()) {
      assert.deepEqual(w.values, kr[i].values, `${w.name} differs between heads`);
    }
  } finally {
    [random, zero].forEach((m) => m.dispose());
  }
  assert.throws(
    () => createNiN({ head: "ones" as never }),
    (e: Error) =>
      e instanceof UsageError && /head must be one of random, zero, got "ones"/.test(e.message),
  );
});

Deno.test("the built-in models' sizes worked out without building them match the built models", async () => {
  await initBackend("cpu");
  for (const options of [{}, { inputSize: 67, width: 0.125 }, { inputSize: 99, width: 0.5 }]) {
    const model = createNiN(options);
    const sizes = ninLayerSizes(options);
    const built = model.layers.filter((layer) => layer.name !== "flatten");
    assert.deepEqual(
      sizes.map((s) => [s.name, s.outputValues, s.params]),
      built.map((l) => [
        l.name,
        (l.outputShape as number[]).slice(1).reduce((a, b) => a * b, 1),
        l.countParams(),
      ]),
      JSON.stringify(options),
    );
    model.dispose();
  }
  const lenet = createLeNet();
  assert.deepEqual(
    lenetLayerSizes().map((s) => [s.name, s.outputValues, s.params]),
    lenet.layers.filter((l) => l.name !== "flatten").map((l) => [
      l.name,
      (l.outputShape as number[]).slice(1).reduce((a, b) => a * b, 1),
      l.countParams(),
    ]),
  );
  lenet.dispose();
});
