/**
 * Max pooling and its gradient (`MaxPool`, `MaxPoolGrad`) for NHWC float32
 * tensors with `valid` padding — NiN's 3×3, stride-2 pools.
 *
 * tfjs computes the gradient in two passes: one writes every window's argmax
 * position to an int32 tensor, the other walks, for every input pixel, the
 * windows that may contain it and compares positions, with sizes in
 * uniforms. Here one pass does both, with every size baked into the shader
 * and four channels per invocation where the channel count allows: each
 * input pixel finds the windows that contain it, recomputes each one's
 * argmax, and adds the window's `dy` where the argmax is this pixel. Ties
 * go to the window's last maximum in row-major order, as tfjs's positions
 * do, so both give the same gradient (up to the order of adding at most
 * `ceil(size/stride)²` terms).
 *
 * Other cases (padding, dilation, rounding modes, other dtypes) go to tfjs's
 * kernels.
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { WebGPUBackend, WebGPUProgram } from "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";

/** Invocations per workgroup of both programs. */
const WORKGROUP = 64;

/** Every size a pooling kernel needs, NHWC. */
interface PoolGeometry {
  batch: number;
  inH: number;
  inW: number;
  channels: number;
  outH: number;
  outW: number;
  size: [number, number];
  stride: [number, number];
}

/** The geometry of a pool the kernels cover, or undefined. */
function poolGeometry(
  x: tf.TensorInfo,
  attrs: Pick<tf.MaxPoolAttrs, "filterSize" | "strides" | "pad" | "dimRoundingMode">,
): PoolGeometry | undefined {
  if (
    x.dtype !== "float32" || x.shape.length !== 4 || attrs.pad !== "valid" ||
    attrs.dimRoundingMode !== undefined || x.shape.some((d) => d === 0)
  ) {
    return undefined;
  }
  const info = tf.backend_util.computePool2DInfo(
    x.shape as [number, number, number, number],
    attrs.filterSize,
    attrs.strides,
    1,
    "valid",
  );
  if (info.outHeight <= 0 || info.outWidth <= 0) return undefined;
  return {
    batch: info.batchSize,
    inH: info.inHeight,
    inW: info.inWidth,
    channels: info.inChannels,
    outH: info.outHeight,
    outW: info.outWidth,
    size: [info.filterHeight, info.filterWidth],
    stride: [info.strideHeight, info.strideWidth],
  };
}

/** `vec4<f32>` where the channels come in fours, else `f32`. */
function lanes(g: PoolGeometry): { vec: number; type: string; groups: number } {
  const vec = g.channels % 4 === 0 ? 4 : 1;
  return { vec, type: vec === 4 ? "vec4<f32>" : "f32", groups: g.channels / vec };
}

/**
 * One pass over a pool's geometry: `forward` (one invocation per output
 * pixel and channel group, `x` → the window maxima) or `gradient` (one per
 * input pixel and channel group, `dy` and `x` → `dx`).
 */
class MaxPoolProgram implements WebGPUProgram {
  variableNames: string[];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [0, 1, 2, 3] }; // flat: main(index)
  dispatch: [number, number, number];
  workgroupSize: [number, number, number] = [WORKGROUP, 1, 1];
  variableComponents: number[];
  outputComponent: number;
  readonly #g: PoolGeometry;
  readonly #pass: "forward" | "gradient";

  constructor(g: PoolGeometry, pass: "forward" | "gradient") {
    const { vec, groups } = lanes(g);
    this.#g = g;
    this.#pass = pass;
    this.variableNames = pass === "forward" ? ["x"] : ["dy", "x"];
    this.variableComponents = this.variableNames.map(() => vec);
    this.outputComponent = vec;
    this.outputShape = pass === "forward"
      ? [g.batch, g.outH, g.outW, g.channels]
      : [g.batch, g.inH, g.inW, g.channels];
    const units = this.outputShape.slice(0, 3).reduce((a, b) => a * b, 1) * groups;
    this.dispatch = [Math.ceil(units / WORKGROUP), 1, 1];
    this.shaderKey = `${pass === "forward" ? "fastMaxPool_" : "fastMaxPoolGrad_"}${
      JSON.stringify(g)
    }`;
  }

  getUserCode(): string {
    return this.#pass === "forward" ? this.#forward() : this.#gradient();
  }

  /**
   * WGSL that returns for an index past the output and otherwise names the
   * output element: image `b`, pixel (`row`, `col`), channel group `group`.
   */
  #locate(): string {
    const [batch, height, width] = this.outputShape;
    const groups = lanes(this.#g).groups;
    return `
        _ = uniforms.NAN; // tfjs binds its uniforms to every program: keep the binding
        if (index >= ${batch * height * width * groups}) {
          return;
        }
        let group = index % ${groups};
        let pixel = index / ${groups};
        let col = pixel % ${width};
        let row = (pixel / ${width}) % ${height};
        let b = pixel / ${width * height};`;
  }

  #forward(): string {
    const g = this.#g;
    const { groups } = lanes(g);
    return `
      fn main(index: i32) {
        ${this.#locate()}
        let corner = ((b * ${g.inH} + row * ${g.stride[0]}) * ${g.inW} + col * ${
      g.stride[1]
    }) * ${groups} + group;
        var best = x[corner];
        for (var r = 0; r < ${g.size[0]}; r++) {
          for (var c = 0; c < ${g.size[1]}; c++) {
            best = max(best, x[corner + (r * ${g.inW} + c) * ${groups}]);
          }
        }
        result[index] = best;
      }
    `;
  }

  #gradient(): string {
    const g = this.#g;
    const { type, groups } = lanes(g);
    const [sizeH, sizeW] = g.size;
    const [strideH, strideW] = g.stride;
    // Window (i, j) covers input rows i·stride … i·stride + size − 1.
    const windowRange = (at: string, size: number, stride: number, out: number, name: string) => `
        let ${name}First = max(0, (${at} - ${size - 1} + ${stride - 1}) / ${stride});
        let ${name}Last = min(${out - 1}, ${at} / ${stride});`;
    return `
      fn main(index: i32) {
        ${this.#locate()}
        ${windowRange("row", sizeH, strideH, g.outH, "i")}
        ${windowRange("col", sizeW, strideW, g.outW, "j")}
        var sum = ${type}(0.0);
        for (var i = iFirst; i <= iLast; i++) {
          for (var j = jFirst; j <= jLast; j++) {
            let corner = ((b * ${g.inH} + i * ${strideH}) * ${g.inW} + j * ${strideW}) * ${groups} + group;
            // The window's argmax, the last maximum in row-major order (tfjs's tie rule).
            var best = x[corner];
            var at = ${type}(0.0);
            for (var r = 0; r < ${sizeH}; r++) {
              for (var c = 0; c < ${sizeW}; c++) {
                let v = x[corner + (r * ${g.inW} + c) * ${groups}];
                let take = v >= best;
                best = select(best, v, take);
                at = select(at, ${type}(f32(r * ${sizeW} + c)), take);
              }
            }
            let mine = f32((row - i * ${strideH}) * ${sizeW} + (col - j * ${strideW}));
            let grad = dy[((b * ${g.outH} + i) * ${g.outW} + j) * ${groups} + group];
            sum = sum + select(${type}(0.0), grad, at == ${type}(mine));
          }
        }
        result[index] = sum;
      }
    `;
  }
}

/**
 * Max pooling of a float32 NHWC tensor with `valid` padding; undefined for
 * any other `MaxPool` (tfjs's kernel then runs).
 *
 * @example
 * ```ts ignore
 * import { fastMaxPool } from "./max_pool.ts";
 *
 * const y = fastMaxPool({ x }, { filterSize: 3, strides: 2, pad: "valid" }, backend);
 * ```
 */
export function fastMaxPool(
  inputs: { x: tf.TensorInfo },
  attrs: tf.MaxPoolAttrs,
  backend: WebGPUBackend,
): tf.TensorInfo | undefined {
  const g = poolGeometry(inputs.x, attrs);
  if (g === undefined) return undefined;
  return backend.runWebGPUProgram(new MaxPoolProgram(g, "forward"), [inputs.x], "float32");
}

/**
 * The gradient of {@linkcode fastMaxPool}'s pooling with respect to its
 * input, in one pass; undefined for any other `MaxPoolGrad`.
 *
 * @example
 * ```ts ignore
 * import { fastMaxPoolGrad } from "./max_pool.ts";
 *
 * const dx = fastMaxPoolGrad({ dy, input: x }, { filterSize: 3, strides: 2, pad: "valid" }, backend);
 * ```
 */
export function fastMaxPoolGrad(
  inputs: { dy: tf.TensorInfo; input: tf.TensorInfo },
  attrs: tf.MaxPoolGradAttrs,
  backend: WebGPUBackend,
): tf.TensorInfo | undefined {
  const g = poolGeometry(inputs.input, attrs);
  if (
    g === undefined || inputs.dy.dtype !== "float32" ||
    inputs.dy.shape.join() !== [g.batch, g.outH, g.outW, g.channels].join()
  ) {
    return undefined;
  }
  const program = new MaxPoolProgram(g, "gradient");
  return backend.runWebGPUProgram(program, [inputs.dy, inputs.input], "float32");
}
