/**
 * Kernel benchmark: each NiN convolution's forward pass, input gradient (dX)
 * and weight gradient (dW) with tfjs's kernels and with this library's, next
 * to tfjs `matMul` at the same GEMM size on the same adapter (the roofline
 * proxy: the best tfjs does on a plain matrix product there).
 *
 * Runs in this thread, on the backend `initBackend` set up.
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type * as tfl from "npm:@tensorflow/tfjs-layers@4.22.0";
import { type KernelSet, useKernels } from "../kernels/mod.ts";
import { createNiN } from "../model/nin.ts";
import { summarize, type Summary } from "./stats.ts";

/** The three kernels of a convolution in training. */
export type ConvPass = "forward" | "dX" | "dW";

/** One layer × pass × kernel set of {@linkcode benchKernels}. */
export interface KernelResult {
  /** Layer name, e.g. `nin1_conv`. */
  layer: string;
  /** Input shape NHWC and kernel `[kh, kw, in, out]`, e.g. `16×67×67×1 * 11×11×1×12 /4`. */
  shape: string;
  /** Which kernel. */
  pass: ConvPass;
  /** Whose kernel. */
  kernels: KernelSet;
  /** Milliseconds per call. */
  ms: Summary;
  /** Multiply-adds × 2 per second, in GFLOP/s, at the median. */
  gflops: number;
  /** tfjs `matMul` at this pass's GEMM size, GFLOP/s (the roofline proxy). */
  matMulGflops: number;
}

/** Options for {@linkcode benchKernels}. */
export interface KernelBenchOptions {
  /** NiN input side. */
  inputSize: number;
  /** NiN width multiplier. */
  width: number;
  /** Images per call. */
  batch: number;
  /** Calls per timed repetition (issued back to back, then one read-back); at least 2. */
  calls: number;
  /** Timed repetitions (their median is reported). */
  repeats: number;
  /** Layers to measure (default: every convolution of NiN). */
  layers?: readonly string[];
  /** Called after each result. */
  onResult?: (result: KernelResult) => void;
}

/** A NiN convolution layer's shapes and attributes. */
interface ConvLayer {
  name: string;
  input: [number, number, number, number];
  filter: [number, number, number, number];
  output: [number, number, number, number];
  strides: [number, number];
  pad: "same" | "valid";
}

/**
 * Times every NiN convolution's forward, dX and dW kernels, with tfjs's
 * kernels and with this library's, on the active backend (`webgpu`), and
 * tfjs `matMul` at the same GEMM sizes. Leaves the `fast` kernels in place.
 *
 * @example
 * ```ts ignore
 * import { initBackend } from "../train/shared/backend.ts";
 * import { benchKernels } from "./kernel_bench.ts";
 *
 * await initBackend("webgpu");
 * const results = await benchKernels({ inputSize: 67, width: 0.125, batch: 16, calls: 5, repeats: 3 });
 * for (const r of results) console.log(r.layer, r.pass, r.kernels, r.gflops.toFixed(2));
 * ```
 */
export async function benchKernels(options: KernelBenchOptions): Promise<KernelResult[]> {
  const results: KernelResult[] = [];
  const layers = ninConvLayers(options).filter((l) =>
    options.layers === undefined || options.layers.includes(l.name)
  );
  try {
    for (const layer of layers) {
      const x = tf.randomNormal(layer.input);
      const filter = tf.randomNormal(layer.filter);
      const dy = tf.randomNormal(layer.output);
      const [b, oh, ow, oc] = layer.output;
      const [kh, kw, ic] = layer.filter;
      const [, ih, iw] = layer.input;
      // GEMM sizes (rows, columns, inner) of each pass.
      const gemm: Record<ConvPass, [number, number, number]> = {
        forward: [b * oh * ow, oc, kh * kw * ic],
        dX: [b * ih * iw, ic, kh * kw * oc],
        dW: [kh * kw * ic, oc, b * oh * ow],
      };
      const attrs = { strides: layer.strides, pad: layer.pad, dataFormat: "NHWC" as const };
      const run: Record<ConvPass, () => tf.Tensor> = {
        forward: () => tf.conv2d(x as tf.Tensor4D, filter as tf.Tensor4D, layer.strides, layer.pad),
        dX: () =>
          tf.engine().runKernel(tf.Conv2DBackpropInput, { dy, filter }, {
            ...attrs,
            inputShape: layer.input,
          }) as tf.Tensor,
        dW: () =>
          tf.engine().runKernel(tf.Conv2DBackpropFilter, { x, dy }, {
            ...attrs,
            filterShape: layer.filter,
          }) as tf.Tensor,
      };
      // The first layer's dX is never computed in training (its input is the image).
      const passes: ConvPass[] = layer.name === layers[0].name && layer.input[3] === 1
        ? ["forward", "dW"]
        : ["forward", "dX", "dW"];
      for (const pass of passes) {
        const [m, n, k] = gemm[pass];
        const flops = 2 * m * n * k;
        const matMulGflops = flops / (await timeMatMul([m, n, k], options)).median / 1e6;
        for (const kernels of ["tfjs", "fast"] as const) {
          useKernels(kernels);
          const ms = await timeCalls(run[pass], options);
          const result: KernelResult = {
            layer: layer.name,
            shape: `${layer.input.join("×")} * ${layer.filter.join("×")} /${layer.strides[0]}`,
            pass,
            kernels,
            ms,
            gflops: flops / ms.median / 1e6,
            matMulGflops,
          };
          results.push(result);
          options.onResult?.(result);
        }
      }
      tf.dispose([x, filter, dy]);
    }
  } finally {
    useKernels("fast");
  }
  return results;
}

/**
 * Milliseconds per call of `fn`, without the fixed cost of submitting and
 * reading back (about 15 ms on llvmpipe, more than most of these kernels):
 * `calls` calls back to back and one call alone, each ending in a read-back,
 * `(T(calls) − T(1)) / (calls − 1)`; median over `repeats`.
 */
async function timeCalls(
  fn: () => tf.Tensor,
  options: { calls: number; repeats: number },
): Promise<Summary> {
  const run = async (calls: number) => {
    const started = performance.now();
    let last: tf.Tensor | undefined;
    for (let i = 0; i < calls; i++) {
      last?.dispose();
      last = fn();
    }
    await last!.data();
    last!.dispose();
    return performance.now() - started;
  };
  await run(1); // warm-up: shader compilation
  const times: number[] = [];
  for (let r = 0; r < options.repeats; r++) {
    const one = await run(1);
    const many = await run(options.calls);
    times.push(Math.max(many - one, 1e-3) / (options.calls - 1));
  }
  return summarize(times);
}

/** Milliseconds per tfjs `matMul` of an m×k by a k×n matrix, as {@linkcode timeCalls}. */
async function timeMatMul(
  [m, n, k]: [number, number, number],
  options: { calls: number; repeats: number },
): Promise<Summary> {
  const a = tf.randomNormal([m, k]);
  const b = tf.randomNormal([k, n]);
  try {
    return await timeCalls(() => tf.matMul(a, b), options);
  } finally {
    tf.dispose([a, b]);
  }
}

/** NiN's convolution layers at `options`' input size, width and batch. */
function ninConvLayers(options: { inputSize: number; width: number; batch: number }): ConvLayer[] {
  const model = createNiN({ inputSize: options.inputSize, width: options.width, dropout: 0 });
  try {
    return model.layers.filter((l) => l.getClassName() === "Conv2D").map((layer) => {
      const config = (layer as tfl.layers.Layer).getConfig() as {
        kernelSize: number[];
        strides: number[];
        padding: string;
        filters: number;
      };
      const input = ((layer.input as tfl.SymbolicTensor).shape as number[]).slice(1);
      const output = (layer.outputShape as number[]).slice(1);
      return {
        name: layer.name,
        input: [options.batch, ...input] as [number, number, number, number],
        filter: [...config.kernelSize, input[2], config.filters] as [
          number,
          number,
          number,
          number,
        ],
        output: [options.batch, ...output] as [number, number, number, number],
        strides: config.strides as [number, number],
        pad: config.padding as "same" | "valid",
      };
    });
  } finally {
    model.dispose();
  }
}
