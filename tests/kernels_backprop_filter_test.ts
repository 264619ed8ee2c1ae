import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs-core";
import type { WebGPUBackend } from "@tensorflow/tfjs-backend-webgpu";
import { fastConv2DBackpropFilter } from "../lib/kernels/conv2d_backprop_filter.ts";
import { useKernels } from "../lib/kernels/mod.ts";
import { initBackend } from "../lib/train/backend.ts";
import { mulberry32 } from "../lib/util/random.ts";

await initBackend("webgpu", { kernels: "fast" });

type Attrs = tf.Conv2DBackpropFilterAttrs;

/** One Conv2DBackpropFilter call: x of `xShape`, dy of the matching shape. */
interface Case {
  name: string;
  xShape: [number, number, number, number];
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
    filterShape: c.filterShape,
  };
}

function dyShape(c: Case): number[] {
  const info = tf.backend_util.computeConv2DInfo(
    c.xShape,
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

/** Runs Conv2DBackpropFilter on the active backend. */
async function backpropFilter(
  c: Case,
  x: Float32Array,
  dy: Float32Array,
): Promise<Float32Array> {
  const xT = tf.tensor(x, c.xShape);
  const dyT = tf.tensor(dy, dyShape(c));
  const out = tf.engine().runKernel(
    tf.Conv2DBackpropFilter,
    { x: xT, dy: dyT },
    attrsOf(c) as unknown as tf.NamedAttrMap,
  ) as tf.Tensor;
  const values = await out.data() as Float32Array;
  tf.dispose([xT, dyT, out]);
  return values;
}

/**
 * tfjs' CPU result and, per filter element, Σ|x·dy| over its terms, which
 * bounds the rounding error of any order of summation. The CPU backend needs
 * seconds per 100 MFLOP, so the sum of magnitudes, which only sets the
 * tolerance, comes from tfjs' own webgpu kernel.
 */
async function reference(
  c: Case,
  x: Float32Array,
  dy: Float32Array,
): Promise<{ want: Float32Array; scale: Float32Array }> {
  await tf.setBackend("cpu");
  let want: Float32Array;
  try {
    want = await backpropFilter(c, x, dy);
  } finally {
    await tf.setBackend("webgpu");
  }
  const scale = await withTfjsKernel(() => backpropFilter(c, x.map(Math.abs), dy.map(Math.abs)));
  return { want, scale };
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
 * Compares the webgpu result with tfjs' CPU backend. Both add the same K
 * products in float32, in different orders (the CPU in one running sum, the
 * fast kernel in per-lane and per-slice partial sums); each result is then
 * within γ·Σ|x·dy| of the exact sum, γ ≈ K·2⁻²⁴ at worst and ≈ √K·2⁻²⁴ for
 * the independent roundings of random data. With K ≤ 24 000 here, √K·2⁻²⁴ ≤
 * 1e-5; the tolerance of 1e-5·Σ|x·dy| leaves that margin for both results,
 * while a missing, duplicated or misplaced term is off by about one term.
 * The absolute 1e-6 covers filter taps that only ever see zero padding.
 */
async function checkCase(c: Case, seed: number): Promise<Float32Array> {
  const x = randomValues(tf.util.sizeFromShape(c.xShape), seed);
  const dy = randomValues(tf.util.sizeFromShape(dyShape(c)), seed + 1);
  const got = await backpropFilter(c, x, dy);
  const { want, scale } = await reference(c, x, dy);
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
      xShape: [batch, side, side, inC],
      filterShape: [kernel, kernel, inC, outC],
      strides: stride,
      pad,
    });
    side = pad === "valid" ? Math.floor((side - kernel) / stride) + 1 : side;
    for (const mlp of [1, 2]) {
      cases.push({
        name: `${block}_mlp${mlp}`,
        xShape: [batch, side, side, outC],
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

Deno.test("fast Conv2DBackpropFilter matches the CPU backend on NiN's layers at 67 px, width 0.125, batch 16", async () => {
  for (const [i, c] of ninCases("67px", 16, 67, 0.125).entries()) await checkCase(c, 100 + i);
});

// tfjs' CPU backend takes about 8 s for each of these; the 5×5 layer would take 80 s.
Deno.test("fast Conv2DBackpropFilter matches the CPU backend on NiN's first layers at 224 px, width 1", async () => {
  const cases = ninCases("224px", 1, 224, 1).slice(0, 2);
  for (const [i, c] of cases.entries()) await checkCase(c, 200 + i);
});

Deno.test("fast Conv2DBackpropFilter matches the CPU backend on odd shapes, strides and paddings", async () => {
  const cases: Case[] = [
    {
      name: "stride 2 same, 3 → 5 channels",
      xShape: [3, 9, 10, 3],
      filterShape: [3, 3, 3, 5],
      strides: 2,
      pad: "same",
    },
    {
      name: "stride 4 valid, batch 1",
      xShape: [1, 23, 23, 1],
      filterShape: [11, 11, 1, 7],
      strides: 4,
      pad: "valid",
    },
    {
      name: "non-square kernel and strides",
      xShape: [2, 11, 8, 6],
      filterShape: [2, 5, 6, 9],
      strides: [3, 1],
      pad: "same",
    },
    {
      name: "numeric padding",
      xShape: [2, 6, 6, 8],
      filterShape: [3, 3, 8, 4],
      strides: 1,
      pad: 2,
    },
    {
      name: "explicit padding",
      xShape: [2, 7, 5, 4],
      filterShape: [3, 2, 4, 3],
      strides: [2, 1],
      pad: [[0, 0], [2, 1], [0, 3], [0, 0]],
    },
    {
      name: "numeric padding, dimRoundingMode ceil",
      xShape: [2, 10, 9, 4],
      filterShape: [3, 3, 4, 6],
      strides: 2,
      pad: 1,
      dimRoundingMode: "ceil",
    },
    {
      name: "single output channel, long K",
      xShape: [4, 40, 40, 2],
      filterShape: [3, 3, 2, 1],
      strides: 1,
      pad: "same",
    },
  ];
  for (const [i, c] of cases.entries()) await checkCase(c, 300 + i);
});

Deno.test("Conv2DBackpropFilter on NCHW falls back to tfjs' kernel", async () => {
  const c: Case = {
    name: "NCHW",
    xShape: [2, 3, 9, 9],
    filterShape: [3, 3, 3, 4],
    strides: 1,
    pad: "same",
    dataFormat: "NCHW",
  };
  const x = randomValues(tf.util.sizeFromShape(c.xShape), 400);
  const dy = randomValues(tf.util.sizeFromShape(dyShape(c)), 401);
  const xT = tf.tensor(x, c.xShape);
  const dyT = tf.tensor(dy, dyShape(c));
  const backend = tf.backend() as WebGPUBackend;
  assert.equal(fastConv2DBackpropFilter({ x: xT, dy: dyT }, attrsOf(c), backend), undefined);
  tf.dispose([xT, dyT]);
  const fast = await checkCase(c, 400);
  // tfjs' own program, bit for bit: the fast kernel would sum in another order.
  assert.deepEqual(fast, await withTfjsKernel(() => backpropFilter(c, x, dy)));
});

Deno.test("fast Conv2DBackpropFilter frees its partial sums", async () => {
  const c = ninCases("67px", 16, 67, 0.125)[0];
  const x = tf.tensor(randomValues(tf.util.sizeFromShape(c.xShape), 500), c.xShape);
  const dy = tf.tensor(randomValues(tf.util.sizeFromShape(dyShape(c)), 501), dyShape(c));
  const run = async () => {
    const out = tf.engine().runKernel(
      tf.Conv2DBackpropFilter,
      { x, dy },
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
  tf.dispose([x, dy]);
});
