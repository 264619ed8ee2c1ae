/**
 * The shape of a 2-D convolution as the fast kernels bake it into their
 * shaders, and which convolutions they cover.
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";

/** Every size a convolution kernel needs, in NHWC and `[kh, kw, in, out]`. */
export interface ConvGeometry {
  /** Batch size. */
  batch: number;
  /** Input height. */
  inH: number;
  /** Input width. */
  inW: number;
  /** Input channels. */
  inC: number;
  /** Output height. */
  outH: number;
  /** Output width. */
  outW: number;
  /** Output channels. */
  outC: number;
  /** Kernel height. */
  kH: number;
  /** Kernel width. */
  kW: number;
  /** Vertical stride. */
  strideH: number;
  /** Horizontal stride. */
  strideW: number;
  /** Rows of implicit zero padding above the input. */
  padTop: number;
  /** Columns of implicit zero padding left of the input. */
  padLeft: number;
}

/**
 * The geometry of the convolution of `x` with `filter` under `attrs`, or
 * undefined when the fast kernels do not cover it: they take float32 NHWC
 * tensors, dilation 1, and `same`, `valid` or explicit padding.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { convGeometry } from "./geometry.ts";
 *
 * const g = convGeometry(
 *   { shape: [8, 224, 224, 1], dtype: "float32" },
 *   { shape: [11, 11, 1, 96], dtype: "float32" },
 *   { strides: 4, pad: "valid", dataFormat: "NHWC", dilations: 1 },
 * );
 * assert.deepEqual([g?.outH, g?.outW, g?.outC], [54, 54, 96]);
 * assert.equal(convGeometry(
 *   { shape: [8, 1, 224, 224], dtype: "float32" },
 *   { shape: [11, 11, 1, 96], dtype: "float32" },
 *   { strides: 4, pad: "valid", dataFormat: "NCHW", dilations: 1 },
 * ), undefined);
 * ```
 */
export function convGeometry(
  x: Pick<tf.TensorInfo, "shape" | "dtype">,
  filter: Pick<tf.TensorInfo, "shape" | "dtype">,
  attrs: Pick<tf.Conv2DAttrs, "strides" | "pad" | "dataFormat" | "dilations" | "dimRoundingMode">,
): ConvGeometry | undefined {
  const dilations = typeof attrs.dilations === "number"
    ? [attrs.dilations, attrs.dilations]
    : attrs.dilations ?? [1, 1];
  if (
    x.dtype !== "float32" || filter.dtype !== "float32" || x.shape.length !== 4 ||
    filter.shape.length !== 4 || (attrs.dataFormat ?? "NHWC") !== "NHWC" ||
    dilations[0] !== 1 || dilations[1] !== 1
  ) {
    return undefined;
  }
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    filter.shape as [number, number, number, number],
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
  );
  return {
    batch: info.batchSize,
    inH: info.inHeight,
    inW: info.inWidth,
    inC: info.inChannels,
    outH: info.outHeight,
    outW: info.outWidth,
    outC: info.outChannels,
    kH: info.filterHeight,
    kW: info.filterWidth,
    strideH: info.strideHeight,
    strideW: info.strideWidth,
    padTop: info.padInfo.top,
    padLeft: info.padInfo.left,
  };
}

/**
 * The geometry of a convolution's gradient kernel (dX or dW): as
 * {@linkcode convGeometry} for the forward convolution of `x` with `filter`,
 * and undefined also when `dy` is not float32 or any of the three is empty.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { backpropGeometry } from "./geometry.ts";
 *
 * const g = backpropGeometry({
 *   x: { shape: [2, 7, 7, 12], dtype: "float32" },
 *   filter: { shape: [5, 5, 12, 32], dtype: "float32" },
 *   dy: { shape: [2, 7, 7, 32], dtype: "float32" },
 * }, { strides: 1, pad: "same", dataFormat: "NHWC" });
 * assert.equal(g?.outC, 32);
 * ```
 */
export function backpropGeometry(
  tensors: Record<"x" | "filter" | "dy", Pick<tf.TensorInfo, "shape" | "dtype">>,
  attrs: Pick<tf.Conv2DAttrs, "strides" | "pad" | "dataFormat" | "dimRoundingMode">,
): ConvGeometry | undefined {
  const { x, filter, dy } = tensors;
  const empty = [x, filter, dy].some((t) => tf.util.sizeFromShape(t.shape) === 0);
  if (empty || dy.dtype !== "float32") return undefined;
  return convGeometry(x, filter, { ...attrs, dilations: 1 });
}
