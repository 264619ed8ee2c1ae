/**
 * The two bias kernels of a training step: adding a per-channel bias to an
 * NHWC activation (`Add` of `[…, C]` and `[C]`), and its gradient, the sum of
 * `dy` over every axis but the channels (`Sum` over all but the last axis).
 *
 * tfjs runs both through its general kernels: a broadcasting binary op that
 * recomputes the broadcast index per element, and a reduction that needs
 * the reduced axes innermost. Here the channel count is baked into the
 * shader: the add reads the bias as `vec4`s of channels where the count is a
 * multiple of 4, and the sum runs one invocation per group of 4 channels
 * down the rows, in a fixed order (deterministic). That sum has as many
 * invocations as channel groups: plenty on llvmpipe, where it is measured;
 * a real GPU would want the rows split too.
 *
 * Anything else (other shapes, dtypes, axes, `keepDims`) goes to tfjs's
 * kernels.
 *
 * @module
 */

import type * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { WebGPUBackend, WebGPUProgram } from "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";

/** Invocations per workgroup of both programs. */
const WORKGROUP = 64;

class BiasAddProgram implements WebGPUProgram {
  variableNames = ["a", "b"];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number] = [WORKGROUP, 1, 1];
  variableComponents: number[];
  outputComponent: number;
  readonly #units: number;
  readonly #groups: number;

  constructor(shape: number[]) {
    const channels = shape[shape.length - 1];
    const vec = channels % 4 === 0 ? 4 : 1;
    this.outputShape = shape;
    this.dispatchLayout = { x: shape.map((_, i) => i) }; // flat: main(index)
    this.outputComponent = vec;
    this.variableComponents = [vec, vec];
    this.#units = shape.reduce((a, b) => a * b, 1) / vec;
    this.#groups = channels / vec;
    this.dispatch = [Math.ceil(this.#units / WORKGROUP), 1, 1];
    this.shaderKey = `fastBiasAdd_${this.#units}_${this.#groups}_${vec}`;
  }

  getUserCode(): string {
    return `
      fn main(index: i32) {
        _ = uniforms.NAN; // tfjs binds its uniforms to every program: keep the binding
        if (index < ${this.#units}) {
          result[index] = a[index] + b[index % ${this.#groups}];
        }
      }
    `;
  }
}

class ChannelSumProgram implements WebGPUProgram {
  variableNames = ["x"];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [0] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number] = [WORKGROUP, 1, 1];
  variableComponents: number[];
  outputComponent: number;
  readonly #rows: number;
  readonly #groups: number;

  constructor(rows: number, channels: number) {
    const vec = channels % 4 === 0 ? 4 : 1;
    this.outputShape = [channels];
    this.outputComponent = vec;
    this.variableComponents = [vec];
    this.#rows = rows;
    this.#groups = channels / vec;
    this.dispatch = [Math.ceil(this.#groups / WORKGROUP), 1, 1];
    this.shaderKey = `fastChannelSum_${rows}_${this.#groups}_${vec}`;
  }

  getUserCode(): string {
    const zero = this.outputComponent === 4 ? "vec4<f32>(0.0)" : "0.0";
    return `
      fn main(index: i32) {
        _ = uniforms.NAN; // tfjs binds its uniforms to every program: keep the binding
        if (index >= ${this.#groups}) {
          return;
        }
        var sum = ${zero};
        for (var r = 0; r < ${this.#rows}; r++) {
          sum = sum + x[r * ${this.#groups} + index];
        }
        result[index] = sum;
      }
    `;
  }
}

/**
 * `a + b` where one is a float32 tensor `[…, C]` and the other a float32
 * bias `[C]`; undefined for any other `Add` (tfjs's kernel then runs).
 *
 * @example
 * ```ts ignore
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { fastBiasAdd } from "./bias.ts";
 *
 * const y = fastBiasAdd({ a: activations, b: bias }, tf.backend() as WebGPUBackend);
 * ```
 */
export function fastBiasAdd(
  inputs: { a: tf.TensorInfo; b: tf.TensorInfo },
  backend: WebGPUBackend,
): tf.TensorInfo | undefined {
  const [tensor, bias] = inputs.b.shape.length === 1 ? [inputs.a, inputs.b] : [inputs.b, inputs.a];
  const channels = tensor.shape[tensor.shape.length - 1];
  if (
    tensor.dtype !== "float32" || bias.dtype !== "float32" || tensor.shape.length < 2 ||
    bias.shape.length !== 1 || bias.shape[0] !== channels ||
    tensor.shape.some((d) => d === 0)
  ) {
    return undefined;
  }
  const program = new BiasAddProgram(tensor.shape);
  return backend.runWebGPUProgram(program, [tensor, bias], "float32");
}

/**
 * The sum of a float32 tensor `[…, C]` over every axis but the last
 * (`keepDims` false), as `[C]`; undefined for any other `Sum`.
 *
 * @example
 * ```ts ignore
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { fastChannelSum } from "./bias.ts";
 *
 * const biasGradient = fastChannelSum({ x: dy }, { axis: [0, 1, 2], keepDims: false }, backend);
 * ```
 */
export function fastChannelSum(
  inputs: { x: tf.TensorInfo },
  attrs: { axis: number | number[]; keepDims: boolean },
  backend: WebGPUBackend,
): tf.TensorInfo | undefined {
  const { x } = inputs;
  const rank = x.shape.length;
  const axes = (Array.isArray(attrs.axis) ? attrs.axis : [attrs.axis])
    .map((axis) => (axis < 0 ? axis + rank : axis)).sort((p, q) => p - q);
  const allButLast = axes.length === rank - 1 && axes.every((axis, i) => axis === i);
  if (x.dtype !== "float32" || rank < 2 || attrs.keepDims || !allButLast) return undefined;
  if (x.shape.some((d) => d === 0)) return undefined;
  const channels = x.shape[rank - 1];
  const rows = x.shape.slice(0, -1).reduce((a, b) => a * b, 1);
  return backend.runWebGPUProgram(new ChannelSumProgram(rows, channels), [x], "float32");
}
