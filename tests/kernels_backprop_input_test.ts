import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { fastConv2DBackpropInput } from "../lib/kernels/conv2d_backprop_input.ts";
import { initBackend } from "../lib/train/shared/backend.ts";
import {
  type BackpropKernel,
  checkBackpropCase,
  convAttrs,
  convCase,
  expectBackpropFallback,
  expectBackpropNoLeaks,
  ninCases,
} from "./kernel_helpers.ts";

await initBackend("webgpu", { kernels: "fast" });

/** Conv2DBackpropInput: dx from dy and the filter; `inputShape` says dx's shape, x's. */
const INPUT: BackpropKernel<tf.Conv2DBackpropInputAttrs> = {
  name: tf.Conv2DBackpropInput,
  inputs: ["dy", "filter"],
  attrs: (c) => ({ ...convAttrs(c), inputShape: c.xShape }),
  fast: ([dy, filter], attrs, backend) => fastConv2DBackpropInput({ dy, filter }, attrs, backend),
};

Deno.test("fast Conv2DBackpropInput matches the CPU backend on NiN's layers at 67 px, width 0.125, batch 16", async () => {
  const cases = ninCases("67px", 16, 67, 0.125);
  for (const [i, c] of cases.entries()) await checkBackpropCase(INPUT, c, 100 + i);
});

Deno.test("fast Conv2DBackpropInput matches the CPU backend on NiN's layers at 99 px (the quick preset: a 2×2 last block), batch 4", async () => {
  const cases = ninCases("99px", 4, 99, 0.125);
  for (const [i, c] of cases.entries()) await checkBackpropCase(INPUT, c, 300 + i);
});

Deno.test("fast Conv2DBackpropInput matches the CPU backend on NiN's blocks 1 and 2 at 224 px, width 1", async () => {
  const cases = ninCases("224px", 1, 224, 1).slice(0, 6);
  for (const [i, c] of cases.entries()) await checkBackpropCase(INPUT, c, 200 + i);
});

Deno.test("fast Conv2DBackpropInput matches the CPU backend on odd shapes, strides and paddings", async () => {
  const explicitPadding: tf.Conv2DBackpropInputAttrs["pad"] = [[0, 0], [2, 1], [0, 3], [0, 0]];
  const cases = [
    convCase("stride 2 same, 3 → 5 channels", [3, 9, 10, 3], [3, 3, 3, 5], 2, "same"),
    convCase(
      "stride 4 valid, 11×11, batch 1, 8 output channels",
      [1, 23, 23, 1],
      [11, 11, 1, 8],
      4,
      "valid",
    ),
    convCase(
      "stride larger than the kernel: pixels no tap reaches",
      [2, 9, 9, 4],
      [2, 2, 4, 8],
      3,
      "valid",
    ),
    convCase("non-square kernel and strides", [2, 11, 8, 6], [2, 5, 6, 9], [3, 1], "same"),
    convCase("numeric padding, dimRoundingMode ceil", [2, 10, 9, 4], [3, 3, 4, 6], 2, 1, {
      dimRoundingMode: "ceil",
    }),
    convCase("explicit padding", [2, 7, 5, 8], [3, 2, 8, 12], [2, 1], explicitPadding),
    convCase("many input channels, 1×1", [2, 5, 5, 40], [1, 1, 40, 20], 1, "valid"),
  ];
  for (const [i, c] of cases.entries()) await checkBackpropCase(INPUT, c, 300 + i);
});

Deno.test("Conv2DBackpropInput on NCHW falls back to tfjs' kernel", async () => {
  const c = convCase("NCHW", [2, 3, 9, 9], [3, 3, 3, 4], 1, "same", { dataFormat: "NCHW" });
  await expectBackpropFallback(INPUT, c, 400);
});

Deno.test("fast Conv2DBackpropInput leaves no tensors behind", async () => {
  await expectBackpropNoLeaks(INPUT, ninCases("67px", 16, 67, 0.125)[3], 500);
});
