/**
 * Shared helpers for the fast kernels' tests: seeded random inputs, running a
 * computation on a chosen backend or kernel set, the comparison with tfjs's
 * `cpu` backend within a float32 summation-order tolerance, a leak check;
 * and, for the two backprop kernels, the convolution cases they are tested
 * on and those checks applied to a {@linkcode BackpropKernel}.
 *
 * The tests call `initBackend("webgpu", { kernels: "fast" })` first: the
 * helpers assume the `webgpu` backend with the fast kernels is active, and
 * leave it so.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { WebGPUBackend } from "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";
import { useKernels } from "../lib/kernels/mod.ts";
import { mulberry32 } from "../lib/util/random.ts";

/** A tensor's values and shape on the host, so that it can be made on any backend. */
export interface HostTensor {
  values: Float32Array;
  shape: number[];
}

/** What a test computes from its input tensors: one tfjs op or kernel call. */
export type Compute = (...inputs: tf.Tensor[]) => tf.Tensor;

/** `size` values in [-1, 1) from a fixed seed (Mulberry32). */
export function randomValues(size: number, seed: number): Float32Array {
  const next = mulberry32(seed);
  return Float32Array.from({ length: size }, () => next() / 2 ** 31 - 1);
}

/** A host tensor of `shape` with {@linkcode randomValues} from `seed`. */
export function randomHostTensor(shape: readonly number[], seed: number): HostTensor {
  return { values: randomValues(tf.util.sizeFromShape([...shape]), seed), shape: [...shape] };
}

/** `t` as a tensor on the active backend. */
export function toTensor(t: HostTensor): tf.Tensor {
  return tf.tensor(t.values, t.shape);
}

/**
 * Runs `compute` on the active backend and kernel set, on tensors made from
 * `inputs`, and returns its result on the host; every tensor it made is
 * disposed.
 */
export async function runOnActiveBackend(
  compute: Compute,
  inputs: readonly HostTensor[],
): Promise<HostTensor> {
  const tensors = inputs.map(toTensor);
  try {
    const out = compute(...tensors);
    try {
      return { values: await out.data() as Float32Array, shape: out.shape };
    } finally {
      out.dispose();
    }
  } finally {
    tf.dispose(tensors);
  }
}

/** How many of the backend's compiled shaders have a key starting with `prefix`. */
export function compiledShaders(prefix: string): number {
  const cache = (tf.backend() as unknown as { pipelineCache: Record<string, unknown> })
    .pipelineCache;
  return Object.keys(cache).filter((key) => key.startsWith(prefix)).length;
}

/** Runs `f` on tfjs's `cpu` backend, then makes `webgpu` the active backend again. */
export async function onCpuBackend<T>(f: () => Promise<T>): Promise<T> {
  await tf.setBackend("cpu");
  try {
    return await f();
  } finally {
    await tf.setBackend("webgpu");
  }
}

/**
 * Runs `f` with tfjs's own webgpu kernels registered in place of the fast
 * ones (`useKernels("tfjs")`), then registers the fast ones again.
 */
export async function withTfjsKernels<T>(f: () => Promise<T>): Promise<T> {
  useKernels("tfjs");
  try {
    return await f();
  } finally {
    useKernels("fast");
  }
}

/**
 * How far an output of the fast kernel may be from the `cpu` backend's: at
 * most `relative`·Σ|products| + `absolute`, where Σ|products| is the sum of
 * the magnitudes of the terms of that output. See
 * {@linkcode expectMatchesCpu} for how to choose `relative`.
 */
export interface Tolerance {
  relative: number;
  absolute: number;
}

/**
 * 2·K·2⁻²⁴: the relative tolerance that no two summation orders of K float32
 * terms exceed (to first order).
 */
export function worstCaseRelative(terms: number): number {
  return 2 * terms * 2 ** -24;
}

/**
 * Runs `compute` on `inputs` on the `webgpu` backend (fast kernels) and on
 * tfjs's `cpu` backend, asserts that the shapes are equal and that every
 * output is within `tolerance` of the `cpu` one, and returns the webgpu
 * result. A failure names `label`, the element and both values.
 *
 * The tolerance. Every output is a sum of K float32 products; both backends
 * add the same products, in different orders (the cpu in one running sum,
 * the fast kernels in per-lane, per-tap or per-slice partial sums). Any order
 * lands within γ·Σ|products| of the exact sum, with γ ≤ K·2⁻²⁴ at worst and
 * γ ≈ √K·2⁻²⁴ for the independent roundings of random data, so the two
 * results differ by at most 2γ·Σ|products|. A test picks `relative` as
 * either {@linkcode worstCaseRelative}(K) = 2·K·2⁻²⁴, which no correct kernel
 * can exceed, for small K; or, for large K, a fixed 1e-5, which covers the
 * random-data estimate √K·2⁻²⁴ of each result for K up to 24 000 (9.2e-6;
 * the worst case would be 2.9e-3 there, too loose to catch a wrong term). A
 * missing, duplicated or misplaced term moves an output by about one term,
 * Σ|products|/K, which stays above both: 1/K > 2·K·2⁻²⁴ for K < 2 896, and
 * 1/K > 1e-5 for K < 100 000.
 *
 * Σ|products| is `compute` on |inputs|: on the `cpu` backend with
 * `magnitudesOn: "cpu"`, or with tfjs's own webgpu kernels with
 * `magnitudesOn: "tfjs webgpu"` where the cpu backend would be too slow (it
 * needs seconds per 100 MFLOP); it only sets the tolerance.
 */
export async function expectMatchesCpu(
  label: string,
  compute: Compute,
  inputs: readonly HostTensor[],
  options: { tolerance: Tolerance; magnitudesOn: "cpu" | "tfjs webgpu" },
): Promise<HostTensor> {
  const got = await runOnActiveBackend(compute, inputs);
  const want = await onCpuBackend(() => runOnActiveBackend(compute, inputs));
  const magnitudes = inputs.map((t) => ({ values: t.values.map(Math.abs), shape: t.shape }));
  const scale = options.magnitudesOn === "cpu"
    ? await onCpuBackend(() => runOnActiveBackend(compute, magnitudes))
    : await withTfjsKernels(() => runOnActiveBackend(compute, magnitudes));
  assert.deepEqual(got.shape, want.shape, `${label}: shape`);
  const { relative, absolute } = options.tolerance;
  for (let i = 0; i < want.values.length; i++) {
    const bound = relative * scale.values[i] + absolute;
    if (!(Math.abs(got.values[i] - want.values[i]) <= bound)) {
      assert.fail(`${label}: element ${i} is ${got.values[i]}, want ${want.values[i]} ± ${bound}`);
    }
  }
  return got;
}

/**
 * Asserts that `compute` on `inputs` gives the same bits with the fast kernel
 * set as with tfjs's own kernels: for a case that the fast kernel hands to
 * tfjs's, which would sum in another order were it the fast kernel's.
 */
export async function expectTfjsKernelResult(
  label: string,
  compute: Compute,
  inputs: readonly HostTensor[],
): Promise<void> {
  const fast = await runOnActiveBackend(compute, inputs);
  const tfjs = await withTfjsKernels(() => runOnActiveBackend(compute, inputs));
  assert.deepEqual(fast, tfjs, `${label}: tfjs's kernel either way, the same bits`);
}

/**
 * Runs `compute` (reading and disposing its result) once to warm caches,
 * then five more times, and asserts that neither the number of tensors nor
 * the backend's number of data ids grew.
 */
export async function expectNoLeaks(compute: () => tf.Tensor): Promise<void> {
  const run = async () => {
    const out = compute();
    await out.data();
    out.dispose();
  };
  await run();
  const tensors = tf.memory().numTensors;
  const dataIds = tf.engine().backend.numDataIds();
  for (let i = 0; i < 5; i++) await run();
  assert.equal(tf.memory().numTensors, tensors, "tensors");
  assert.equal(tf.engine().backend.numDataIds(), dataIds, "data ids");
}

/** Shapes are NHWC (NCHW with `dataFormat: "NCHW"`); filters [kh, kw, in, out]. */
type Shape4 = [number, number, number, number];

/**
 * A forward convolution, whose two gradients the backprop tests compute: x of
 * `xShape`, filter of `filterShape`, dy of {@linkcode dyShape}.
 */
export interface ConvCase {
  name: string;
  xShape: Shape4;
  filterShape: Shape4;
  strides: number | [number, number];
  pad: tf.Conv2DBackpropFilterAttrs["pad"];
  dataFormat?: "NHWC" | "NCHW";
  dimRoundingMode?: "floor" | "round" | "ceil";
}

/** A {@linkcode ConvCase}, written on one line in a table of cases. */
export function convCase(
  name: string,
  xShape: Shape4,
  filterShape: Shape4,
  strides: ConvCase["strides"],
  pad: ConvCase["pad"],
  more: Pick<ConvCase, "dataFormat" | "dimRoundingMode"> = {},
): ConvCase {
  return { name, xShape, filterShape, strides, pad, ...more };
}

/** The attributes both backprop kernels share, for `c`. */
export function convAttrs(c: ConvCase): Omit<tf.Conv2DBackpropFilterAttrs, "filterShape"> {
  return {
    strides: c.strides,
    pad: c.pad,
    dataFormat: c.dataFormat ?? "NHWC",
    dimRoundingMode: c.dimRoundingMode,
  };
}

/** The forward convolution's output shape, which is dy's. */
export function dyShape(c: ConvCase): number[] {
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

/** NiN's convolutions (d2l §7.3) for an input side and channel width, as cases. */
export function ninCases(prefix: string, batch: number, size: number, width: number): ConvCase[] {
  const channels = (c: number) => Math.max(1, Math.round(c * width));
  const cases: ConvCase[] = [];
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
    cases.push(
      convCase(`${block}_conv`, [batch, side, side, inC], [kernel, kernel, inC, outC], stride, pad),
    );
    side = pad === "valid" ? Math.floor((side - kernel) / stride) + 1 : side;
    for (const mlp of [1, 2]) {
      const xShape: Shape4 = [batch, side, side, outC];
      cases.push(convCase(`${block}_mlp${mlp}`, xShape, [1, 1, outC, outC], 1, "valid"));
    }
    inC = outC;
    side = pool(side);
  }
  return cases;
}

/**
 * One of the two backprop kernels, Conv2DBackpropFilter or
 * Conv2DBackpropInput, as its tests drive it. Each takes two of the forward
 * convolution's three tensors.
 */
export interface BackpropKernel<Attrs> {
  /** The tfjs kernel's name. */
  name: string;
  /** Its inputs, by the name the kernel gives them, in the order of `fast`'s `inputs`. */
  inputs: readonly ("x" | "filter" | "dy")[];
  /** Its attributes for a case. */
  attrs: (c: ConvCase) => Attrs;
  /** The fast implementation itself: its result, or undefined for a case it hands to tfjs's. */
  fast: (inputs: tf.Tensor[], attrs: Attrs, backend: WebGPUBackend) => tf.TensorInfo | undefined;
}

/**
 * The backprop kernels' tolerance (see {@linkcode expectMatchesCpu}): an
 * element of the weight gradient sums up to K = 24 000 products in these
 * tests, one of the input gradient up to 6 400, so the relative 1e-5. The
 * absolute 1e-6 covers outputs with no terms: filter taps that only ever see
 * zero padding, pixels that no tap reaches.
 */
export const BACKPROP_TOLERANCE: Tolerance = { relative: 1e-5, absolute: 1e-6 };

/** `k`'s inputs for `c`, random: the i-th from `seed + i`. */
export function backpropInputs<A>(k: BackpropKernel<A>, c: ConvCase, seed: number): HostTensor[] {
  const shapes = { x: c.xShape, filter: c.filterShape, dy: dyShape(c) };
  return k.inputs.map((name, i) => randomHostTensor(shapes[name], seed + i));
}

/**
 * `k` for `c`, called through the engine, so that the registered kernel set
 * decides which implementation runs.
 */
export function backpropCompute<A>(k: BackpropKernel<A>, c: ConvCase): Compute {
  return (...inputs) => {
    const named = Object.fromEntries(k.inputs.map((name, i) => [name, inputs[i]]));
    return tf.engine().runKernel(k.name, named, k.attrs(c) as tf.NamedAttrMap) as tf.Tensor;
  };
}

/**
 * `k` for `c` on random inputs from `seed`, checked against tfjs's cpu
 * backend within {@linkcode BACKPROP_TOLERANCE}; Σ|products| comes from
 * tfjs's webgpu kernel. Returns the webgpu result.
 */
export function checkBackpropCase<A>(
  k: BackpropKernel<A>,
  c: ConvCase,
  seed: number,
): Promise<HostTensor> {
  const options = { tolerance: BACKPROP_TOLERANCE, magnitudesOn: "tfjs webgpu" } as const;
  return expectMatchesCpu(c.name, backpropCompute(k, c), backpropInputs(k, c, seed), options);
}

/**
 * Asserts that `k`'s fast implementation declines `c` (returns undefined),
 * that the registered kernel still matches the cpu backend on random inputs
 * from `seed`, and that its result is tfjs's own kernel's, bit for bit.
 */
export async function expectBackpropFallback<A>(
  k: BackpropKernel<A>,
  c: ConvCase,
  seed: number,
): Promise<void> {
  const inputs = backpropInputs(k, c, seed);
  const tensors = inputs.map(toTensor);
  try {
    const backend = tf.backend() as WebGPUBackend;
    assert.equal(
      k.fast(tensors, k.attrs(c), backend),
      undefined,
      `${c.name}: fast kernel's result`,
    );
  } finally {
    tf.dispose(tensors);
  }
  await checkBackpropCase(k, c, seed);
  await expectTfjsKernelResult(c.name, backpropCompute(k, c), inputs);
}

/** {@linkcode expectNoLeaks} for `k` of `c`, on random inputs from `seed`. */
export async function expectBackpropNoLeaks<A>(
  k: BackpropKernel<A>,
  c: ConvCase,
  seed: number,
): Promise<void> {
  const tensors = backpropInputs(k, c, seed).map(toTensor);
  try {
    await expectNoLeaks(() => backpropCompute(k, c)(...tensors));
  } finally {
    tf.dispose(tensors);
  }
}
