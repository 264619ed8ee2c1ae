/**
 * The fast max pool and its gradient against tfjs's `cpu` backend on NiN's
 * pools and odd shapes, ties against tfjs's own webgpu kernels (the rule the
 * fast gradient copies), the cases left to tfjs's kernels, and no leaks.
 */

import assert from "node:assert/strict";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { initBackend } from "../lib/train/shared/backend.ts";
import {
  compiledShaders,
  expectMatchesCpu,
  expectNoLeaks,
  expectTfjsKernelResult,
  type HostTensor,
  randomHostTensor,
  runOnActiveBackend,
  withTfjsKernels,
  worstCaseRelative,
} from "./kernel_helpers.ts";

await initBackend("webgpu", { kernels: "fast" });

/** [input shape, window, stride]: NiN's three pools at 67 and 224 px, and odd cases. */
const CASES: [number[], number, number][] = [
  [[2, 15, 15, 12], 3, 2], // maxpool1 at 67 px, width ⅛
  [[2, 7, 7, 32], 3, 2], // maxpool2
  [[2, 3, 3, 48], 3, 2], // maxpool3: one window
  [[1, 54, 54, 96], 3, 2], // maxpool1 at 224 px, batch 1
  [[3, 12, 12, 384], 3, 2], // maxpool3 at 224 px
  [[2, 9, 8, 5], 3, 2], // 5 channels (scalar lanes), non-square
  [[2, 8, 8, 4], 2, 2], // windows that do not overlap
  [[1, 10, 10, 3], 2, 3], // windows that leave gaps
];

/** `MaxPoolGrad` of `dy` for the pool of `x`, as autodiff calls it. */
function maxPoolGrad(
  x: tf.Tensor,
  dy: tf.Tensor,
  size: number,
  stride: number,
  pad: "valid" | "same" = "valid",
): tf.Tensor {
  return tf.tidy(() => {
    const y = tf.maxPool(x as tf.Tensor4D, size, stride, pad);
    return tf.engine().runKernel(tf.MaxPoolGrad, { dy, input: x, output: y }, {
      filterSize: size,
      strides: stride,
      pad,
    }) as tf.Tensor;
  });
}

/** The pool's output shape for input `shape`. */
function pooledShape(shape: number[], size: number, stride: number): number[] {
  const out = (n: number) => Math.floor((n - size) / stride) + 1;
  return [shape[0], out(shape[1]), out(shape[2]), shape[3]];
}

Deno.test("the fast max pool matches tfjs's cpu backend exactly", async () => {
  const before = compiledShaders("fastMaxPool_");
  for (const [index, [shape, size, stride]] of CASES.entries()) {
    await expectMatchesCpu(
      `maxPool ${shape.join("×")} /${size},${stride}`,
      (x) => tf.maxPool(x as tf.Tensor4D, size, stride, "valid"),
      [randomHostTensor(shape, 100 + index)],
      { tolerance: { relative: 0, absolute: 0 }, magnitudesOn: "cpu" },
    );
  }
  assert.equal(compiledShaders("fastMaxPool_") - before, CASES.length, "the fast kernel ran");
});

Deno.test("the fast max-pool gradient matches tfjs's cpu backend (random inputs: no ties)", async () => {
  const before = compiledShaders("fastMaxPoolGrad_");
  for (const [index, [shape, size, stride]] of CASES.entries()) {
    const x = randomHostTensor(shape, 200 + index);
    const dy = randomHostTensor(pooledShape(shape, size, stride), 300 + index);
    // Each input sums the dy of the windows whose maximum it is: at most
    // ceil(size/stride)² terms of |dy| < 1, in another order than the cpu's.
    // (|x| would move the maxima, so the bound is absolute.) A term sent to
    // the wrong pixel moves two results by |dy|, about 0.5.
    const terms = Math.ceil(size / stride) ** 2;
    await expectMatchesCpu(
      `maxPoolGrad ${shape.join("×")} /${size},${stride}`,
      (a, b) => maxPoolGrad(a, b, size, stride),
      [x, dy],
      {
        tolerance: { relative: 0, absolute: worstCaseRelative(terms) * terms },
        magnitudesOn: "cpu",
      },
    );
  }
  assert.equal(compiledShaders("fastMaxPoolGrad_") - before, CASES.length, "the fast kernel ran");
});

Deno.test("with ties (ReLU's zeros, repeated values) the gradient goes where tfjs's webgpu kernel sends it", async () => {
  for (const [index, [shape, size, stride]] of CASES.slice(0, 3).entries()) {
    // Values in {0, 1, 2} (half of them ReLU-like zeros): every window has ties.
    const random = randomHostTensor(shape, 400 + index);
    const x: HostTensor = {
      shape,
      values: random.values.map((v) => Math.max(0, Math.round(v * 4 - 1))),
    };
    // Small integers: every sum is exact, whatever the order.
    const dyRandom = randomHostTensor(pooledShape(shape, size, stride), 500 + index);
    const dy: HostTensor = { ...dyRandom, values: dyRandom.values.map((v) => Math.round(v * 8)) };
    const compute = (a: tf.Tensor, b: tf.Tensor) => maxPoolGrad(a, b, size, stride);
    const fast = await runOnActiveBackend(compute, [x, dy]);
    const tfjs = await withTfjsKernels(() => runOnActiveBackend(compute, [x, dy]));
    assert.deepEqual(fast, tfjs, `${shape.join("×")}: the same gradient as tfjs's kernel`);
    assert.ok(fast.values.some((v) => v !== 0), "some gradient flows");
  }
});

Deno.test("pools with padding are tfjs's kernels, bit for bit", async () => {
  const x = randomHostTensor([2, 7, 7, 4], 31);
  await expectTfjsKernelResult("same", (t) => tf.maxPool(t as tf.Tensor4D, 3, 2, "same"), [x]);
  const dy = randomHostTensor([2, 4, 4, 4], 32);
  await expectTfjsKernelResult("gradient, same", (a, b) => maxPoolGrad(a, b, 3, 2, "same"), [
    x,
    dy,
  ]);
});

Deno.test("the max-pool kernels leak no tensors", async () => {
  const x = tf.randomNormal([2, 7, 7, 12]);
  const dy = tf.randomNormal([2, 3, 3, 12]);
  await expectNoLeaks(() => tf.maxPool(x as tf.Tensor4D, 3, 2, "valid"));
  await expectNoLeaks(() => maxPoolGrad(x, dy, 3, 2));
  tf.dispose([x, dy]);
});
