import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { fastConv2DBackpropFilter } from "../lib/kernels/conv2d_backprop_filter.ts";
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

/** Conv2DBackpropFilter: dW from x and dy; `filterShape` says dW's shape. */
const FILTER: BackpropKernel<tf.Conv2DBackpropFilterAttrs> = {
  name: tf.Conv2DBackpropFilter,
  inputs: ["x", "dy"],
  attrs: (c) => ({ ...convAttrs(c), filterShape: c.filterShape }),
  fast: ([x, dy], attrs, backend) => fastConv2DBackpropFilter({ x, dy }, attrs, backend),
};

Deno.test("fast Conv2DBackpropFilter matches the CPU backend on NiN's layers at 67 px, width 0.125, batch 16", async () => {
  const cases = ninCases("67px", 16, 67, 0.125);
  for (const [i, c] of cases.entries()) await checkBackpropCase(FILTER, c, 100 + i);
});

Deno.test("fast Conv2DBackpropFilter matches the CPU backend on NiN's layers at 99 px (the quick preset: a 2×2 last block), batch 4", async () => {
  const cases = ninCases("99px", 4, 99, 0.125);
  for (const [i, c] of cases.entries()) await checkBackpropCase(FILTER, c, 300 + i);
});

// tfjs' CPU backend takes about 8 s for each of these; the 5×5 layer would take 80 s.
Deno.test("fast Conv2DBackpropFilter matches the CPU backend on NiN's first layers at 224 px, width 1", async () => {
  const cases = ninCases("224px", 1, 224, 1).slice(0, 2);
  for (const [i, c] of cases.entries()) await checkBackpropCase(FILTER, c, 200 + i);
});

Deno.test("fast Conv2DBackpropFilter matches the CPU backend on odd shapes, strides and paddings", async () => {
  const explicitPadding: tf.Conv2DBackpropFilterAttrs["pad"] = [[0, 0], [2, 1], [0, 3], [0, 0]];
  const cases = [
    convCase("stride 2 same, 3 → 5 channels", [3, 9, 10, 3], [3, 3, 3, 5], 2, "same"),
    convCase("stride 4 valid, batch 1", [1, 23, 23, 1], [11, 11, 1, 7], 4, "valid"),
    convCase("non-square kernel and strides", [2, 11, 8, 6], [2, 5, 6, 9], [3, 1], "same"),
    convCase("numeric padding", [2, 6, 6, 8], [3, 3, 8, 4], 1, 2),
    convCase("explicit padding", [2, 7, 5, 4], [3, 2, 4, 3], [2, 1], explicitPadding),
    convCase("numeric padding, dimRoundingMode ceil", [2, 10, 9, 4], [3, 3, 4, 6], 2, 1, {
      dimRoundingMode: "ceil",
    }),
    convCase("single output channel, long K", [4, 40, 40, 2], [3, 3, 2, 1], 1, "same"),
  ];
  for (const [i, c] of cases.entries()) await checkBackpropCase(FILTER, c, 300 + i);
});

Deno.test("Conv2DBackpropFilter on NCHW falls back to tfjs' kernel", async () => {
  const c = convCase("NCHW", [2, 3, 9, 9], [3, 3, 3, 4], 1, "same", { dataFormat: "NCHW" });
  await expectBackpropFallback(FILTER, c, 400);
});

Deno.test("fast Conv2DBackpropFilter frees its partial sums", async () => {
  await expectBackpropNoLeaks(FILTER, ninCases("67px", 16, 67, 0.125)[0], 500);
});
