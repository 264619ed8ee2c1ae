/**
 * The fast forward convolution against tfjs's `cpu` backend: every NiN layer
 * at small inputs, strides 1 and 4, `same` and `valid`, channel counts that
 * are not multiples of 4, batch 1; tfjs's own kernel for cases it does not
 * cover; no tensors leaked.
 */

import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs-core";
import { useKernels } from "../lib/kernels/mod.ts";
import { initBackend } from "../lib/train/backend.ts";
import { mulberry32 } from "../lib/util/random.ts";

await initBackend("webgpu", { kernels: "fast" });

/** Uniform values in [-1, 1), seeded. */
function random(shape: number[], seed: number): tf.Tensor {
  const next = mulberry32(seed);
  const size = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(Float32Array.from({ length: size }, () => next() / 2 ** 31 - 1), shape);
}

/**
 * `fn(...inputs)` on the webgpu backend (fast kernels) and on tfjs's cpu
 * backend, compared per element. Tolerance: each output is a sum of `terms`
 * float32 products; any summation order is within terms·ε·Σ|products| of the
 * exact sum (ε = 2⁻²⁴), so two orders differ by at most twice that. Σ|products|
 * is the same operation on |inputs|, computed on the cpu backend.
 */
async function expectMatchesCpu(
  fn: (...inputs: tf.Tensor[]) => tf.Tensor,
  inputs: tf.Tensor[],
  terms: number,
): Promise<void> {
  const got = fn(...inputs);
  const gotValues = await got.data();
  const gotShape = got.shape;
  got.dispose();
  const hostInputs = await Promise.all(inputs.map(async (t) => ({
    values: await t.data(),
    shape: t.shape,
  })));
  await tf.setBackend("cpu");
  try {
    const cpuInputs = hostInputs.map((t) => tf.tensor(t.values, t.shape));
    const want = fn(...cpuInputs);
    const scale = fn(...cpuInputs.map((t) => tf.abs(t)));
    assert.deepEqual(gotShape, want.shape);
    const wantValues = await want.data();
    const scaleValues = await scale.data();
    const epsilon = 2 ** -24;
    for (let i = 0; i < wantValues.length; i++) {
      const bound = 2 * terms * epsilon * scaleValues[i] + 1e-30;
      const error = Math.abs(gotValues[i] - wantValues[i]);
      if (!(error <= bound)) {
        assert.fail(`element ${i}: ${gotValues[i]} vs ${wantValues[i]} (bound ${bound})`);
      }
    }
    tf.dispose([...cpuInputs, want, scale]);
  } finally {
    await tf.setBackend("webgpu");
  }
}

/** [input NHWC, filter [kh, kw, in, out], stride, padding] */
type Case = [number[], number[], number, "same" | "valid"];

const NIN_SMALL: Case[] = [
  [[2, 67, 67, 1], [11, 11, 1, 12], 4, "valid"], // nin1_conv at the quick preset
  [[2, 15, 15, 12], [1, 1, 12, 12], 1, "valid"], // 1×1
  [[2, 7, 7, 12], [5, 5, 12, 32], 1, "same"], // nin2_conv
  [[2, 7, 7, 32], [1, 1, 32, 32], 1, "valid"],
  [[2, 3, 3, 32], [3, 3, 32, 48], 1, "same"], // nin3_conv
  [[2, 3, 3, 48], [1, 1, 48, 48], 1, "valid"],
  [[2, 1, 1, 48], [3, 3, 48, 10], 1, "same"], // nin4_conv: 10 channels
  [[2, 1, 1, 10], [1, 1, 10, 10], 1, "valid"],
  [[1, 68, 68, 1], [11, 11, 1, 24], 4, "valid"], // batch 1, width ¼
  [[1, 9, 9, 3], [3, 3, 3, 5], 4, "same"], // stride 4 same, odd channels
  [[3, 8, 6, 6], [3, 2, 6, 7], 1, "valid"], // non-square kernel and input
  [[2, 54, 54, 1], [11, 11, 1, 96], 4, "same"],
];

Deno.test("the fast forward convolution matches tfjs's cpu backend on NiN's shapes and more", async (t) => {
  for (const [index, [xShape, wShape, stride, pad]] of NIN_SMALL.entries()) {
    await t.step(`${xShape.join("×")} * ${wShape.join("×")} /${stride} ${pad}`, async () => {
      const x = random(xShape, 2 * index + 1);
      const w = random(wShape, 2 * index + 2);
      await expectMatchesCpu(
        (a, b) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, stride, pad),
        [x, w],
        wShape[0] * wShape[1] * wShape[2],
      );
      tf.dispose([x, w]);
    });
  }
  // These were the fast kernel's results, not tfjs's fallback: its shaders were compiled.
  const cache = (tf.backend() as unknown as { pipelineCache: Record<string, unknown> })
    .pipelineCache;
  const compiled = Object.keys(cache).filter((key) => key.startsWith("fastConv2D_"));
  assert.equal(compiled.length, NIN_SMALL.length);
});

Deno.test("NiN's first layer at 224 px, the d2l configuration, on two images", async () => {
  const x = random([2, 224, 224, 1], 7);
  const w = random([11, 11, 1, 96], 8);
  await expectMatchesCpu(
    (a, b) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 4, "valid"),
    [x, w],
    121,
  );
  tf.dispose([x, w]);
});

Deno.test("cases the fast kernel does not cover go to tfjs's kernel, with the same result", async () => {
  const x = random([1, 9, 9, 4], 11);
  const w = random([3, 3, 4, 8], 12);
  const dilated = (a: tf.Tensor, b: tf.Tensor) =>
    tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, "same", "NHWC", 2);
  const fast = await dilated(x, w).data();
  useKernels("tfjs");
  const tfjs = await dilated(x, w).data();
  useKernels("fast");
  assert.deepEqual(fast, tfjs, "dilation 2 is tfjs's kernel either way: the same bits");
  await expectMatchesCpu(dilated, [x, w], 36);
  tf.dispose([x, w]);
});

Deno.test("the fast forward convolution leaks no tensors", async () => {
  const x = random([2, 15, 15, 12], 21);
  const w = random([3, 3, 12, 12], 22);
  const run = async () => {
    const y = tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, "same");
    await y.data();
    y.dispose();
  };
  await run();
  const before = tf.memory().numTensors;
  for (let i = 0; i < 5; i++) await run();
  assert.equal(tf.memory().numTensors, before);
  tf.dispose([x, w]);
});

Deno.test("switching kernel sets is idempotent and restores tfjs's own kernels", () => {
  const names = [tf.Conv2D, tf.Conv2DBackpropInput, tf.Conv2DBackpropFilter];
  const current = () => names.map((name) => tf.getKernel(name, "webgpu").kernelFunc);
  useKernels("tfjs");
  const tfjs = current();
  useKernels("fast");
  const fast = current();
  for (const [i, name] of names.entries()) assert.notEqual(fast[i], tfjs[i], name);
  useKernels("fast");
  assert.deepEqual(current(), fast, "a second useKernels('fast') changes nothing");
  useKernels("tfjs");
  useKernels("tfjs");
  assert.deepEqual(current(), tfjs, "tfjs's own kernels are back");
  useKernels("fast");
});
