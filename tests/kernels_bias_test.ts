/**
 * The fast bias add and bias gradient against tfjs's `cpu` backend, the
 * cases they leave to tfjs's kernels, and no leaks.
 */

import assert from "node:assert/strict";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { initBackend } from "../lib/train/shared/backend.ts";
import {
  compiledShaders,
  expectMatchesCpu,
  expectNoLeaks,
  expectTfjsKernelResult,
  randomHostTensor,
  worstCaseRelative,
} from "./kernel_helpers.ts";

await initBackend("webgpu", { kernels: "fast" });

Deno.test("the fast bias add matches tfjs's cpu backend, either operand order, 4k or not", async () => {
  const before = compiledShaders("fastBiasAdd_");
  const cases: [number[], boolean][] = [
    [[2, 5, 5, 12], false], // NiN's activations: channels a multiple of 4
    [[3, 7, 10], false], // 10 channels
    [[2, 3, 3, 48], true], // bias first
  ];
  for (const [index, [shape, biasFirst]] of cases.entries()) {
    const x = randomHostTensor(shape, 2 * index + 1);
    const bias = randomHostTensor([shape.at(-1)!], 2 * index + 2);
    // One addition per element: float32 rounds it once, the same on both backends.
    await expectMatchesCpu(
      `${shape.join("×")} + [${shape.at(-1)}]`,
      (a, b) => biasFirst ? tf.add(b, a) : tf.add(a, b),
      [x, bias],
      { tolerance: { relative: worstCaseRelative(1), absolute: 0 }, magnitudesOn: "cpu" },
    );
  }
  assert.equal(compiledShaders("fastBiasAdd_") - before, cases.length, "the fast kernel ran");
});

Deno.test("the fast bias gradient (a sum over all axes but the channels) matches tfjs's cpu backend", async () => {
  const before = compiledShaders("fastChannelSum_");
  const cases: [number[], number[]][] = [
    [[2, 5, 5, 12], [0, 1, 2]],
    [[3, 7, 10], [0, 1]],
    [[16, 15, 15, 12], [2, 0, 1]], // unsorted
    [[4, 6, 8], [-3, -2]], // negative
  ];
  for (const [index, [shape, axes]] of cases.entries()) {
    const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
    await expectMatchesCpu(
      `sum of ${shape.join("×")} over ${axes.join(",")}`,
      (t) => tf.sum(t, axes),
      [randomHostTensor(shape, 10 + index)],
      { tolerance: { relative: worstCaseRelative(rows), absolute: 0 }, magnitudesOn: "cpu" },
    );
  }
  assert.equal(compiledShaders("fastChannelSum_") - before, cases.length, "the fast kernel ran");
});

Deno.test("other adds and sums are tfjs's kernels, bit for bit", async () => {
  const a = randomHostTensor([2, 3, 4], 21);
  await expectTfjsKernelResult("same-shape add", (x, y) => tf.add(x, y), [
    a,
    randomHostTensor([2, 3, 4], 22),
  ]);
  await expectTfjsKernelResult("broadcast over rows", (x, y) => tf.add(x, y), [
    a,
    randomHostTensor([3, 1], 23),
  ]);
  await expectTfjsKernelResult("sum over the last axis", (x) => tf.sum(x, -1), [a]);
  await expectTfjsKernelResult("keepDims", (x) => tf.sum(x, [0, 1], true), [a]);
  await expectTfjsKernelResult("sum of everything", (x) => tf.sum(x), [a]);
});

Deno.test("the bias kernels leak no tensors", async () => {
  const x = tf.randomNormal([2, 5, 5, 12]);
  const bias = tf.randomNormal([12]);
  await expectNoLeaks(() => tf.add(x, bias));
  await expectNoLeaks(() => tf.sum(x, [0, 1, 2]));
  tf.dispose([x, bias]);
});
