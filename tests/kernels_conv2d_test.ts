/**
 * The fast forward convolution against tfjs's `cpu` backend: every NiN layer
 * at small inputs, strides 1 and 4, `same` and `valid`, channel counts that
 * are not multiples of 4, batch 1; tfjs's own kernel for cases it does not
 * cover; no tensors leaked.
 */

import assert from "node:assert/strict";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { useKernels } from "../lib/kernels/mod.ts";
import { initBackend } from "../lib/train/shared/backend.ts";
import {
  type Compute,
  expectMatchesCpu,
  expectNoLeaks,
  expectTfjsKernelResult,
  type HostTensor,
  randomHostTensor,
  toTensor,
  worstCaseRelative,
} from "./kernel_helpers.ts";

await initBackend("webgpu", { kernels: "fast" });

/** `tf.conv2d` with `stride` and `pad`, as a {@linkcode Compute}. */
function conv2d(stride: number, pad: "same" | "valid"): Compute {
  return (x, w) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, stride, pad);
}

/**
 * Checks `compute` on x and w against tfjs's cpu backend. Each output sums
 * `terms` ≤ 432 products here, few enough for the worst-case bound (see
 * `expectMatchesCpu`); the absolute 1e-30 only lets an output whose terms
 * are all zero be a denormal away from zero.
 */
async function expectMatchesCpuConv(
  label: string,
  compute: Compute,
  x: HostTensor,
  w: HostTensor,
  terms: number,
): Promise<void> {
  const tolerance = { relative: worstCaseRelative(terms), absolute: 1e-30 };
  await expectMatchesCpu(label, compute, [x, w], { tolerance, magnitudesOn: "cpu" });
}

/** [input NHWC, filter [kh, kw, in, out], stride, padding] */
type Case = [number[], number[], number, "same" | "valid"];

const NIN_SMALL: Case[] = [
  [[2, 67, 67, 1], [11, 11, 1, 12], 4, "valid"], // nin1_conv at 67 px
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
  [[2, 99, 99, 1], [11, 11, 1, 12], 4, "valid"], // nin1_conv at the quick preset's 99 px
  [[2, 2, 2, 48], [3, 3, 48, 10], 1, "same"], // its nin4_conv: a 2×2 map, padding on every side
];

Deno.test("the fast forward convolution matches tfjs's cpu backend on NiN's shapes and more", async (t) => {
  for (const [index, [xShape, wShape, stride, pad]] of NIN_SMALL.entries()) {
    const label = `${xShape.join("×")} * ${wShape.join("×")} /${stride} ${pad}`;
    await t.step(label, async () => {
      const x = randomHostTensor(xShape, 2 * index + 1);
      const w = randomHostTensor(wShape, 2 * index + 2);
      await expectMatchesCpuConv(
        label,
        conv2d(stride, pad),
        x,
        w,
        wShape[0] * wShape[1] * wShape[2],
      );
    });
  }
  // These were the fast kernel's results, not tfjs's fallback: its shaders were compiled.
  const cache = (tf.backend() as unknown as { pipelineCache: Record<string, unknown> })
    .pipelineCache;
  const compiled = Object.keys(cache).filter((key) => key.startsWith("fastConv2D_"));
  assert.equal(compiled.length, NIN_SMALL.length);
});

Deno.test("NiN's first layer at 224 px, the d2l configuration, on two images", async () => {
  const x = randomHostTensor([2, 224, 224, 1], 7);
  const w = randomHostTensor([11, 11, 1, 96], 8);
  await expectMatchesCpuConv("224 px", conv2d(4, "valid"), x, w, 121);
});

Deno.test("cases the fast kernel does not cover go to tfjs's kernel, with the same result", async () => {
  const x = randomHostTensor([1, 9, 9, 4], 11);
  const w = randomHostTensor([3, 3, 4, 8], 12);
  const dilated: Compute = (a, b) =>
    tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, "same", "NHWC", 2);
  await expectTfjsKernelResult("dilation 2", dilated, [x, w]);
  await expectMatchesCpuConv("dilation 2", dilated, x, w, 36);
});

Deno.test("the fast forward convolution leaks no tensors", async () => {
  const x = toTensor(randomHostTensor([2, 15, 15, 12], 21));
  const w = toTensor(randomHostTensor([3, 3, 12, 12], 22));
  await expectNoLeaks(() => conv2d(1, "same")(x, w));
  tf.dispose([x, w]);
});

/** `tf.fused.conv2d` with a bias and `activation`, as a {@linkcode Compute} of x, w and bias. */
function fusedConv2d(
  stride: number,
  pad: "same" | "valid",
  activation: "linear" | "relu" | "sigmoid",
): Compute {
  return (x, w, bias) =>
    tf.fused.conv2d({
      x: x as tf.Tensor4D,
      filter: w as tf.Tensor4D,
      strides: stride,
      pad,
      bias,
      activation,
    });
}

const FUSED: [number[], number[], number, "same" | "valid", "linear" | "relu"][] = [
  [[2, 28, 28, 1], [5, 5, 1, 6], 1, "same", "linear"], // LeNet's conv1 (its sigmoid comes after)
  [[2, 14, 14, 6], [5, 5, 6, 16], 1, "valid", "linear"], // LeNet's conv2
  [[2, 7, 7, 8], [3, 3, 8, 12], 1, "same", "relu"], // vec4 channels, ReLU in the epilogue
  [[1, 9, 9, 3], [3, 3, 3, 5], 2, "valid", "relu"], // odd channels
];

Deno.test("the fused forward convolution (bias, ReLU) matches tfjs's cpu backend", async (t) => {
  for (const [index, [xShape, wShape, stride, pad, activation]] of FUSED.entries()) {
    const label = `${xShape.join("×")} * ${
      wShape.join("×")
    } /${stride} ${pad} + bias, ${activation}`;
    await t.step(label, async () => {
      const x = randomHostTensor(xShape, 40 + index);
      const w = randomHostTensor(wShape, 50 + index);
      const bias = randomHostTensor([wShape[3]], 60 + index);
      // One more term than the convolution's: the bias.
      const terms = wShape[0] * wShape[1] * wShape[2] + 1;
      const tolerance = { relative: worstCaseRelative(terms), absolute: 1e-30 };
      await expectMatchesCpu(label, fusedConv2d(stride, pad, activation), [x, w, bias], {
        tolerance,
        magnitudesOn: "cpu",
      });
    });
  }
  const cache = (tf.backend() as unknown as { pipelineCache: Record<string, unknown> })
    .pipelineCache;
  const fused = Object.keys(cache).filter((key) => /^fastConv2D_(row_)?[\d_]*_(b|br)_/.test(key));
  assert.equal(fused.length, FUSED.length, "the fast kernel ran, with its epilogue");
});

Deno.test("a fused activation the fast kernel does not cover goes to tfjs's kernel", async () => {
  const x = randomHostTensor([1, 6, 6, 4], 71);
  const w = randomHostTensor([3, 3, 4, 4], 72);
  const bias = randomHostTensor([4], 73);
  await expectTfjsKernelResult("sigmoid", fusedConv2d(1, "same", "sigmoid"), [x, w, bias]);
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
