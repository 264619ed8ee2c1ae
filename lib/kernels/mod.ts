/**
 * The fast WGSL kernels, and the switch between them and tfjs's own.
 *
 * Each fast kernel replaces one tfjs kernel on the `webgpu` backend for the
 * cases it covers and hands every other case to tfjs's kernel, so models,
 * autodiff and results' meaning stay tfjs's. This runs in whichever thread
 * trains: in a worker, before the replica is built.
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { WebGPUBackend } from "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";
import { fastBiasAdd, fastChannelSum } from "./bias.ts";
import { fastConv2D, fastFusedConv2D } from "./conv2d.ts";
import { fastConv2DBackpropFilter } from "./conv2d_backprop_filter.ts";
import { fastConv2DBackpropInput } from "./conv2d_backprop_input.ts";
import { fastMaxPool, fastMaxPoolGrad } from "./max_pool.ts";

/** The kernel sets a run can use: `fast` (this library's, the default) or `tfjs` (tfjs's own). */
export type KernelSet = "fast" | "tfjs";

/**
 * The kernel sets accepted by {@linkcode useKernels}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { KERNEL_SETS } from "./mod.ts";
 *
 * assert.deepEqual([...KERNEL_SETS], ["fast", "tfjs"]);
 * ```
 */
export const KERNEL_SETS: readonly KernelSet[] = ["fast", "tfjs"];

/** A fast kernel: its result, or undefined for a case it leaves to tfjs. */
type FastKernel = (
  inputs: tf.NamedTensorInfoMap,
  attrs: tf.NamedAttrMap,
  backend: WebGPUBackend,
) => tf.TensorInfo | undefined;

/** tfjs kernel name → this library's implementation. */
const FAST_KERNELS: Readonly<Record<string, FastKernel>> = {
  [tf.Add]: (inputs, _attrs, backend) =>
    fastBiasAdd(inputs as unknown as { a: tf.TensorInfo; b: tf.TensorInfo }, backend),
  [tf.Sum]: (inputs, attrs, backend) =>
    fastChannelSum(
      inputs as unknown as { x: tf.TensorInfo },
      attrs as unknown as { axis: number | number[]; keepDims: boolean },
      backend,
    ),
  [tf.Conv2D]: (inputs, attrs, backend) =>
    fastConv2D(
      inputs as unknown as { x: tf.TensorInfo; filter: tf.TensorInfo },
      attrs as unknown as tf.Conv2DAttrs,
      backend,
    ),
  [tf.FusedConv2D]: (inputs, attrs, backend) =>
    fastFusedConv2D(
      inputs as unknown as { x: tf.TensorInfo; filter: tf.TensorInfo; bias?: tf.TensorInfo },
      attrs as unknown as tf.FusedConv2DAttrs,
      backend,
    ),
  [tf.Conv2DBackpropInput]: (inputs, attrs, backend) =>
    fastConv2DBackpropInput(
      inputs as unknown as { dy: tf.TensorInfo; filter: tf.TensorInfo },
      attrs as unknown as tf.Conv2DBackpropInputAttrs,
      backend,
    ),
  [tf.Conv2DBackpropFilter]: (inputs, attrs, backend) =>
    fastConv2DBackpropFilter(
      inputs as unknown as { x: tf.TensorInfo; dy: tf.TensorInfo },
      attrs as unknown as tf.Conv2DBackpropFilterAttrs,
      backend,
    ),
  [tf.MaxPool]: (inputs, attrs, backend) =>
    fastMaxPool(
      inputs as unknown as { x: tf.TensorInfo },
      attrs as unknown as tf.MaxPoolAttrs,
      backend,
    ),
  [tf.MaxPoolGrad]: (inputs, attrs, backend) =>
    fastMaxPoolGrad(
      inputs as unknown as { dy: tf.TensorInfo; input: tf.TensorInfo },
      attrs as unknown as tf.MaxPoolGradAttrs,
      backend,
    ),
};

/** tfjs's own kernels, saved the first time they are replaced, and their fast replacements. */
const registered = new Map<string, { tfjs: tf.KernelConfig; fast: tf.KernelConfig }>();

/**
 * Makes `set` the kernels of the `webgpu` backend in this thread: `fast`
 * registers this library's kernels in place of tfjs's (each falls back to
 * tfjs's kernel for cases it does not cover), `tfjs` restores tfjs's own.
 * Call it before building the model; it may be called again to switch, and
 * calling it twice with the same set changes nothing.
 *
 * @example
 * ```ts ignore
 * import { useKernels } from "./mod.ts";
 *
 * useKernels("fast");
 * // ... train ...
 * useKernels("tfjs"); // compare with tfjs's kernels
 * ```
 */
export function useKernels(set: KernelSet): void {
  for (const [name, fast] of Object.entries(FAST_KERNELS)) {
    let configs = registered.get(name);
    if (configs === undefined) {
      const tfjs = tf.getKernel(name, "webgpu");
      if (tfjs === undefined) continue; // the webgpu backend is not loaded
      configs = {
        tfjs,
        fast: {
          kernelName: name,
          backendName: "webgpu",
          kernelFunc: (args) =>
            fast(args.inputs, args.attrs ?? {}, args.backend as WebGPUBackend) ??
              tfjs.kernelFunc(args),
        },
      };
      registered.set(name, configs);
    }
    const wanted = set === "fast" ? configs.fast : configs.tfjs;
    if (tf.getKernel(name, "webgpu") === wanted) continue;
    tf.unregisterKernel(name, "webgpu");
    tf.registerKernel(wanted);
  }
}
