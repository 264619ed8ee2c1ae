import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs-core";
import type { WebGPUBackend } from "@tensorflow/tfjs-backend-webgpu";
import { fastConv2DBackpropInput } from "../lib/kernels/conv2d_backprop_input.ts";
import { useKernels } from "../lib/kernels/mod.ts";
import { initBackend } from "../lib/train/backend.ts";
import { mulberry32 } from "../lib/util/random.ts";

await initBackend("webgpu", { kernels: "fast" });

type Attrs = tf.Conv2DBackpropInputAttrs;

/** One Conv2DBackpropInput call: dx of `inputShape`, dy of the matching shape. */
interface Case {
  name: string;
  inputShape: [number, number, number, number];
  filterShape: [number, number, number, number];
  strides: number | [number, number];
  pad: Attrs["pad"];
  dataFormat?: "NHWC" | "NCHW";
  dimRoundingMode?: "floor" | "round" | "ceil";
}

/** Values in [-1, 1) from a fixed seed. */
function randomValues(size: number, seed: number): Float32Array {
  const next = mulberry32(seed);
  return Float32Array.from({ length: size }, () => next() / 2 ** 31 - 1);
}

function attrsOf(c: Case): Attrs {
  return {
    strides: c.strides,
    pad: c.pad,
    dataFormat: c.dataFormat ?? "NHWC",
    dimRoundingMode: c.dimRoundingMode,
    inputShape: c.inputShape,
  };
}

function dyShape(c: Case): number[] {
  const info = tf.backend_util.computeConv2DInfo(
    c.inputShape,
    c.filterShape,
    c.strides,
    1,
    c.pad,
    c.dimRoundingMode,
    false,
    c.dataFormat === "NCHW" ? "channelsFirst" : "channelsLast",
  );
  return info.outShape;
}

/** Runs Conv2DBackpropInput on the active backend. */
async function backpropInput(
  c: Case,
  dy: Float32Array,
  filter: Float32Array,
): Promise<Float32Array> {
  const dyT = tf.tensor(dy, dyShape(c));
  const filterT = tf.tensor(filter, c.filterShape);
  const out = tf.engine().runKernel(
    tf.Conv2DBackpropInput,
    { dy: dyT, filter: filterT },
    attrsOf(c) as unknown as tf.NamedAttrMap,
  ) as tf.Tensor;
  const values = await out.data() as Float32Array;
  tf.dispose([dyT, filterT, out]);
  return values;
}

/** Runs `f` with tfjs' own webgpu kernel registered instead of the fast one. */
async function withTfjsKernel<T>(f: () => Promise<T>): Promise<T> {
  useKernels("tfjs");
  try {
    return await f();
  } finally {
    useKernels("fast");
  }
}

/**
 * tfjs' CPU result and, per input element, Σ|dy·W| over its terms, which
 * bounds the rounding error of any order of summation. The CPU backend needs
 * seconds per 100 MFLOP, so the sum of magnitudes, which only sets the
 * tolerance, comes from tfjs' own webgpu kernel.
 */
async function reference(
  c: Case,
  dy: Float32Array,
  filter: Float32Array,
): Promise<{ want: Float32Array; scale: Float32Array }> {
  await tf.setBackend("cpu");
  let want: Float32Array;
  try {
    want = await backpropInput(c, dy, filter);
  } finally {
    await tf.setBackend("webgpu");
  }
  const scale = await withTfjsKernel(() =>
    backpropInput(c, dy.map(Math.abs), filter.map(Math.abs))
  );
  return { want, scale };
}

/**
 * Compares the webgpu result with tfjs' CPU backend. Both add the same
 * products in float32, in different orders (the fast kernel tap by tap, 4
 * output channels at a time); each result is then within γ·Σ|dy·W| of the
 * exact sum, γ ≈ K·2⁻²⁴ at worst and ≈ √K·2⁻²⁴ for the independent
 * roundings of random data, K the number of terms (≤ 6 400 here, so √K·2⁻²⁴
 * < 5e-6). The tolerance of 1e-5·Σ|dy·W| leaves that margin for both
 * results, while a missing, duplicated or misplaced term is off by about one
 * term. The absolute 1e-6 covers pixels that no tap reaches.
 */
async function checkCase(c: Case, seed: number): Promise<Float32Array> {
  const dy = randomValues(tf.util.sizeFromShape(dyShape(c)), seed);
  const filter = randomValues(tf.util.sizeFromShape(c.filterShape), seed + 1);
  const got = await backpropInput(c, dy, filter);
  const { want, scale } = await reference(c, dy, filter);
  assert.equal(got.length, want.length);
  for (let i = 0; i < want.length; i++) {
    const tolerance = 1e-5 * scale[i] + 1e-6;
    if (!(Math.abs(got[i] - want[i]) <= tolerance)) {
      assert.fail(`${c.name}: element ${i} is ${got[i]}, want ${want[i]} ± ${tolerance}`);
    }
  }
  return got;
}

/** NiN's convolutions (d2l §7.3) for an input side and channel width, as cases. */
function ninCases(prefix: string, batch: number, size: number, width: number): Case[] {
  const channels = (c: number) => Math.max(1, Math.round(c * width));
  const cases: Case[] = [];
  let side = size;
  let inC = 1;
  const pool = (s: number) => Math.floor((s - 3) / 2) + 1;
  const blocks: [number, number, number, "valid" | "same"][] = [
    [channels(96), 11, 4, "valid"],
    [channels(256), 5, 1, "same"],
    [channels(384), 3, 1, "same"],
    [10, 3, 1, "same"],
  ];
  for (const [index, [outC, kernel, stride, pad]] of blocks.entries()) {
    const block = `${prefix} nin${index + 1}`;
    cases.push({
      name: `${block}_conv`,
      inputShape: [batch, side, side, inC],
      filterShape: [kernel, kernel, inC, outC],
      strides: stride,
      pad,
    });
    side = pad === "valid" ? Math.floor((side - kernel) / stride) + 1 : side;
    for (const mlp of [1, 2]) {
      cases.push({
        name: `${block}_mlp${mlp}`,
        inputShape: [batch, side, side, outC],
        filterShape: [1, 1, outC, outC],
        strides: 1,
        pad: "valid",
      });
    }
    inC = outC;
    side = pool(side);
  }
  return cases;
}

Deno.test("fast Conv2DBackpropInput matches the CPU backend on NiN's layers at 67 px, width 0.125, batch 16", async () => {
  for (const [i, c] of ninCases("67px", 16, 67, 0.125).entries()) await checkCase(c, 100 + i);
});

Deno.test("fast Conv2DBackpropInput matches the CPU backend on NiN's blocks 1 and 2 at 224 px, width 1", async () => {
  const cases = ninCases("224px", 1, 224, 1).slice(0, 6);
  for (const [i, c] of cases.entries()) await checkCase(c, 200 + i);
});

Deno.test("fast Conv2DBackpropInput matches the CPU backend on odd shapes, strides and paddings", async () => {
  const cases: Case[] = [
    {
      name: "stride 2 same, 3 → 5 channels",
      inputShape: [3, 9, 10, 3],
      filterShape: [3, 3, 3, 5],
      strides: 2,
      pad: "same",
    },
    {
      name: "stride 4 valid, 11×11, batch 1, 8 output channels",
      inputShape: [1, 23, 23, 1],
      filterShape: [11, 11, 1, 8],
      strides: 4,
      pad: "valid",
    },
    {
      name: "stride larger than the kernel: pixels no tap reaches",
      inputShape: [2, 9, 9, 4],
      filterShape: [2, 2, 4, 8],
      strides: 3,
      pad: "valid",
    },
    {
      name: "non-square kernel and strides",
      inputShape: [2, 11, 8, 6],
      filterShape: [2, 5, 6, 9],
      strides: [3, 1],
      pad: "same",
    },
    {
      name: "numeric padding, dimRoundingMode ceil",
      inputShape: [2, 10, 9, 4],
      filterShape: [3, 3, 4, 6],
      strides: 2,
      pad: 1,
      dimRoundingMode: "ceil",
    },
    {
      name: "explicit padding",
      inputShape: [2, 7, 5, 8],
      filterShape: [3, 2, 8, 12],
      strides: [2, 1],
      pad: [[0, 0], [2, 1], [0, 3], [0, 0]],
    },
    {
      name: "many input channels, 1×1",
      inputShape: [2, 5, 5, 40],
      filterShape: [1, 1, 40, 20],
      strides: 1,
      pad: "valid",
    },
  ];
  for (const [i, c] of cases.entries()) await checkCase(c, 300 + i);
});

Deno.test("Conv2DBackpropInput on NCHW falls back to tfjs' kernel", async () => {
  const c: Case = {
    name: "NCHW",
    inputShape: [2, 3, 9, 9],
    filterShape: [3, 3, 3, 4],
    strides: 1,
    pad: "same",
    dataFormat: "NCHW",
  };
  const dy = randomValues(tf.util.sizeFromShape(dyShape(c)), 400);
  const filter = randomValues(tf.util.sizeFromShape(c.filterShape), 401);
  const dyT = tf.tensor(dy, dyShape(c));
  const filterT = tf.tensor(filter, c.filterShape);
  const backend = tf.backend() as WebGPUBackend;
  assert.equal(
    fastConv2DBackpropInput({ dy: dyT, filter: filterT }, attrsOf(c), backend),
    undefined,
  );
  tf.dispose([dyT, filterT]);
  const fast = await checkCase(c, 400);
  // tfjs' own program, bit for bit: the fast kernel would sum in another order.
  assert.deepEqual(fast, await withTfjsKernel(() => backpropInput(c, dy, filter)));
});

Deno.test("fast Conv2DBackpropInput leaves no tensors behind", async () => {
  const c = ninCases("67px", 16, 67, 0.125)[3];
  const dy = tf.tensor(randomValues(tf.util.sizeFromShape(dyShape(c)), 500), dyShape(c));
  const filter = tf.tensor(randomValues(tf.util.sizeFromShape(c.filterShape), 501), c.filterShape);
  const run = async () => {
    const out = tf.engine().runKernel(
      tf.Conv2DBackpropInput,
      { dy, filter },
      attrsOf(c) as unknown as tf.NamedAttrMap,
    ) as tf.Tensor;
    await out.data();
    out.dispose();
  };
  await run();
  const tensors = tf.memory().numTensors;
  const dataIds = tf.engine().backend.numDataIds();
  for (let i = 0; i < 5; i++) await run();
  assert.equal(tf.memory().numTensors, tensors);
  assert.equal(tf.engine().backend.numDataIds(), dataIds);
  tf.dispose([dy, filter]);
});
