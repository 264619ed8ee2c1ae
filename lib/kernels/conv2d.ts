/**
 * The forward convolution (`Conv2D`) as a register-tiled implicit GEMM in
 * WGSL, for tfjs's `webgpu` backend.
 *
 * Output pixels (batch × output rows × output columns) are the GEMM's rows,
 * output channels its columns, and kernel taps × input channels its inner
 * dimension. Each invocation computes a block of `rows` output pixels × 4
 * output channels in registers, walking the kernel window with nested loops
 * whose bounds are constants (the shapes are baked into each shader), so the
 * im2col index arithmetic is incremental and no im2col matrix is ever built.
 * Neighbouring invocations of a workgroup take neighbouring channel groups of
 * the same pixels: their filter loads are contiguous and their input loads
 * the same. Where the input has a multiple of 4 channels, inputs are read as
 * `vec4`s (16 multiply-adds per load of 4 filter rows); otherwise one channel
 * at a time.
 *
 * A one-channel input (NiN's and LeNet's first layers) has a program of its
 * own, `Conv2DRowProgram`: each invocation takes 8 neighbouring output pixels
 * of one row and loads, per kernel row, the input segment their overlapping
 * windows cover once, instead of one value per tap and pixel. It adds the
 * same products in the same order, so it gives the general program's bits.
 *
 * `FusedConv2D` (what tfjs runs for a layer with a bias whose activation it
 * does not fuse during training — LeNet's sigmoid convolutions — and for
 * every conv layer in inference) adds the bias, and applies ReLU where asked,
 * in the same shader, before the result is written.
 *
 * NHWC input, `[kh, kw, in, out]` filter, float32, dilation 1; anything else
 * goes to tfjs's own kernel.
 *
 * @module
 */

import type * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { WebGPUBackend, WebGPUProgram } from "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";
import { type ConvGeometry, convGeometry } from "./geometry.ts";

/** How much of the output one invocation computes: `rows` pixels × `cols` groups of 4 channels. */
export interface Conv2DTile {
  /** Output pixels per invocation. */
  rows: number;
  /** Groups of 4 output channels per invocation. */
  cols: number;
}

/**
 * The tile for a geometry: 8 pixels, and 2 channel groups where there are
 * 8 or more (1 otherwise). Measured on llvmpipe (1 thread, quick-preset and
 * d2l shapes): more pixels per invocation always helped up to 8, a second
 * channel group helped only with many channels (NiN's first layer at width 1:
 * 3.6 → 4.7 GFLOP/s; at width ⅛, 12 channels: 1.6 → 0.9).
 */
export function conv2DTile(g: ConvGeometry): Conv2DTile {
  return { rows: 8, cols: Math.ceil(g.outC / 4) >= 8 ? 2 : 1 };
}

/** What the shader does to each result before writing it. */
interface Epilogue {
  /** Add a per-channel bias (a third input, `[out]`). */
  bias: boolean;
  /** Then `max(0, ·)`. */
  relu: boolean;
}

/**
 * What both forward programs declare about their inputs and output: `x`, `W`
 * and, with the epilogue's bias, `bias`; `x` read `xComponents` floats at a
 * time, `W`, `bias` and the NHWC output as `vec4`s where the output channels
 * are a multiple of 4. `key` ends the program's shader key.
 */
function forwardIO(g: ConvGeometry, epilogue: Epilogue, xComponents: number): {
  variableNames: string[];
  outputShape: number[];
  variableComponents: number[];
  outputComponent: number;
  key: string;
} {
  const outVec = g.outC % 4 === 0 ? 4 : 1;
  return {
    variableNames: epilogue.bias ? ["x", "W", "bias"] : ["x", "W"],
    outputShape: [g.batch, g.outH, g.outW, g.outC],
    variableComponents: [xComponents, outVec, ...(epilogue.bias ? [outVec] : [])],
    outputComponent: outVec,
    key: `${epilogue.bias ? "b" : ""}${epilogue.relu ? "r" : ""}`,
  };
}

/**
 * WGSL that writes accumulator `acc` (the 4 channels of group `group`, a
 * WGSL expression, at output pixel `pixel`) through the epilogue, if `valid`
 * holds: one `vec4` store where the channels are a multiple of 4, else one
 * store per channel that exists.
 */
function writeResult(
  g: ConvGeometry,
  epilogue: Epilogue,
  at: { acc: string; pixel: string; group: string; valid: string },
): string {
  const finish = (value: string, channel: string, zero: string) => {
    const biased = epilogue.bias ? `${value} + bias[${channel}]` : value;
    return epilogue.relu ? `max(${biased}, ${zero})` : biased;
  };
  const { acc, pixel, group, valid } = at;
  const groups = Math.ceil(g.outC / 4);
  if (g.outC % 4 === 0) {
    return `if (${valid} && ${group} < ${groups}) {
          result[(${pixel}) * ${groups} + ${group}] = ${finish(acc, group, "vec4<f32>(0.0)")};
        }`;
  }
  return `if (${valid}) {
          for (var j = 0; j < 4; j++) {
            let n = (${group}) * 4 + j;
            if (n < ${g.outC}) { result[(${pixel}) * ${g.outC} + n] = ${
    finish(`${acc}[j]`, "n", "0.0")
  }; }
          }
        }`;
}

/**
 * WGSL for filter row `row` (tap × input channels + channel) as a `vec4` of
 * the 4 output channels of group `n`: one `vec4` load where the output
 * channels are a multiple of 4, else four loads (clamped at the last channel).
 */
function filterVec4(g: ConvGeometry, row: string, n: string): string {
  const groups = Math.ceil(g.outC / 4);
  if (g.outC % 4 === 0) return `W[(${row}) * ${groups} + min(${n}, ${groups - 1})]`;
  const channel = (j: number) => `W[(${row}) * ${g.outC} + min((${n}) * 4 + ${j}, ${g.outC - 1})]`;
  return `vec4<f32>(${[0, 1, 2, 3].map(channel).join(", ")})`;
}

/**
 * Workgroups of 64 invocations for `threads` = [channel blocks, pixel
 * blocks]: the channel blocks of a few pixel blocks side by side (up to 16),
 * so that neighbouring invocations share their input loads.
 */
function workgroupLayout(threads: [number, number]): {
  workgroupSize: [number, number, number];
  dispatch: [number, number, number];
} {
  const x = Math.min(16, 2 ** Math.ceil(Math.log2(threads[0])));
  const y = 64 / x;
  return {
    workgroupSize: [x, y, 1],
    dispatch: [Math.ceil(threads[0] / x), Math.ceil(threads[1] / y), 1],
  };
}

class Conv2DProgram implements WebGPUProgram {
  variableNames: string[];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [3], y: [0, 1, 2] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  variableComponents: number[];
  outputComponent: number;
  readonly #g: ConvGeometry;
  readonly #t: Conv2DTile;
  readonly #epilogue: Epilogue;

  constructor(g: ConvGeometry, t: Conv2DTile, epilogue: Epilogue = { bias: false, relu: false }) {
    this.#g = g;
    this.#t = t;
    this.#epilogue = epilogue;
    const io = forwardIO(g, epilogue, g.inC % 4 === 0 ? 4 : 1);
    this.variableNames = io.variableNames;
    this.outputShape = io.outputShape;
    this.variableComponents = io.variableComponents;
    this.outputComponent = io.outputComponent;
    const pixels = g.batch * g.outH * g.outW;
    ({ workgroupSize: this.workgroupSize, dispatch: this.dispatch } = workgroupLayout([
      Math.ceil(Math.ceil(g.outC / 4) / t.cols),
      Math.ceil(pixels / t.rows),
    ]));
    this.shaderKey = `fastConv2D_${Object.values(g).join("_")}_${t.rows}_${t.cols}_${io.key}`;
  }

  getUserCode(): string {
    const g = this.#g;
    const t = this.#t;
    const vecX = g.inC % 4 === 0;
    const groups = Math.ceil(g.outC / 4);
    const pixels = g.batch * g.outH * g.outW;
    const inC4 = vecX ? g.inC / 4 : g.inC;
    const rows = [...Array(t.rows).keys()];
    const cols = [...Array(t.cols).keys()];
    // Filter row `row` (tap × in + channel) as a vec4 of the 4 output channels of group `n`.
    const filterRow = (row: string, n: string) => filterVec4(g, row, n);
    const accumulate = vecX
      ? `
          ${
        cols.map((c) =>
          [0, 1, 2, 3].map((i) =>
            `let w${c}${i} = ${filterRow(`tap * ${g.inC} + c * 4 + ${i}`, `n0 + ${c}`)};`
          ).join("\n          ")
        ).join("\n          ")
      }
          ${
        rows.map((r) =>
          `let x${r} = select(vec4<f32>(0.0), x[max(base${r}, 0) + c], ok${r});
          ${
            cols.map((c) =>
              `acc${r}${c} += x${r}.x * w${c}0 + x${r}.y * w${c}1 + x${r}.z * w${c}2 + x${r}.w * w${c}3;`
            ).join("\n          ")
          }`
        ).join("\n          ")
      }`
      : `
          ${
        cols.map((c) => `let w${c} = ${filterRow(`tap * ${g.inC} + c`, `n0 + ${c}`)};`).join(
          "\n          ",
        )
      }
          ${
        rows.map((r) =>
          `let x${r} = select(0.0, x[max(base${r}, 0) + c], ok${r});
          ${cols.map((c) => `acc${r}${c} += x${r} * w${c};`).join("\n          ")}`
        ).join("\n          ")
      }`;
    const write = (r: number, c: number) =>
      writeResult(g, this.#epilogue, {
        acc: `acc${r}${c}`,
        pixel: `m${r}`,
        group: `n0 + ${c}`,
        valid: `m${r} < ${pixels}`,
      });
    return `
      fn main() {
        _ = uniforms.NAN; // tfjs binds its uniforms to every program: keep the binding
        let n0 = i32(globalId.x) * ${t.cols};
        if (n0 >= ${groups}) { return; }
        let first = i32(globalId.y) * ${t.rows};
        ${
      rows.map((r) =>
        `let m${r} = first + ${r};
        let p${r} = min(m${r}, ${pixels - 1});
        let b${r} = p${r} / ${g.outH * g.outW};
        let oy${r} = (p${r} / ${g.outW}) % ${g.outH} * ${g.strideH} - ${g.padTop};
        let ox${r} = p${r} % ${g.outW} * ${g.strideW} - ${g.padLeft};
        ${cols.map((c) => `var acc${r}${c} = vec4<f32>(0.0);`).join(" ")}`
      ).join("\n        ")
    }
        for (var kh = 0; kh < ${g.kH}; kh++) {
          ${
      rows.map((r) =>
        `let iy${r} = oy${r} + kh;
          let rowOk${r} = iy${r} >= 0 && iy${r} < ${g.inH};`
      ).join("\n          ")
    }
          for (var kw = 0; kw < ${g.kW}; kw++) {
            let tap = kh * ${g.kW} + kw;
            ${
      rows.map((r) =>
        `let ix${r} = ox${r} + kw;
            let ok${r} = rowOk${r} && ix${r} >= 0 && ix${r} < ${g.inW};
            let base${r} = ((b${r} * ${g.inH} + iy${r}) * ${g.inW} + ix${r}) * ${inC4};`
      ).join("\n            ")
    }
            for (var c = 0; c < ${inC4}; c++) {${accumulate}
            }
          }
        }
        ${rows.flatMap((r) => cols.map((c) => write(r, c))).join("\n        ")}
      }
    `;
  }
}

/**
 * How much of the output one invocation of the one-input-channel program
 * computes: `pixels` neighbouring output pixels of one row × `groups` groups
 * of 4 output channels.
 */
interface Conv2DRowTile {
  /** Neighbouring output pixels of one output row. */
  pixels: number;
  /** Groups of 4 output channels. */
  groups: number;
}

/**
 * The tile of the one-input-channel program: 8 pixels, one channel group.
 * Measured on llvmpipe (1 thread), GFLOP/s of the general program → this
 * one: NiN's first layer at 99 px, width ⅛, 1.9 → 3.5; at 224 px, width 1,
 * 2.8 → 5.4; LeNet's first layer (128 images) 0.7 → 1.2. More channel groups
 * per invocation were slower everywhere (3 groups at 99 px: 1.5), as were
 * 4 or 16 pixels; a whole 28-pixel row was faster for LeNet only (1.6–1.8).
 */
const ROW_TILE: Conv2DRowTile = { pixels: 8, groups: 1 };

/**
 * The forward convolution of a one-channel input (NiN's and LeNet's first
 * layers). With one channel, the window of output pixel `ox` in one kernel
 * row is `kW` consecutive input values, and the windows of neighbouring
 * pixels overlap (stride < kW): each invocation loads the input row segment
 * its `pixels` windows cover once per kernel row, into registers, and reuses
 * every value for each pixel whose window holds it and each of its output
 * channels — instead of one load per tap and pixel, as the general program
 * does. Rows outside the input are skipped, columns outside it read as 0.
 */
class Conv2DRowProgram implements WebGPUProgram {
  variableNames: string[];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [3], y: [0, 1, 2] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  variableComponents: number[];
  outputComponent: number;
  readonly #g: ConvGeometry;
  readonly #t: Conv2DRowTile;
  readonly #epilogue: Epilogue;

  constructor(
    g: ConvGeometry,
    t: Conv2DRowTile,
    epilogue: Epilogue = { bias: false, relu: false },
  ) {
    this.#g = g;
    this.#t = t;
    this.#epilogue = epilogue;
    const io = forwardIO(g, epilogue, 1);
    this.variableNames = io.variableNames;
    this.outputShape = io.outputShape;
    this.variableComponents = io.variableComponents;
    this.outputComponent = io.outputComponent;
    ({ workgroupSize: this.workgroupSize, dispatch: this.dispatch } = workgroupLayout([
      Math.ceil(Math.ceil(g.outC / 4) / t.groups),
      g.batch * g.outH * Math.ceil(g.outW / t.pixels),
    ]));
    this.shaderKey = `fastConv2D_row_${
      Object.values(g).join("_")
    }_${t.pixels}_${t.groups}_${io.key}`;
  }

  getUserCode(): string {
    const g = this.#g;
    const t = this.#t;
    const groups = Math.ceil(g.outC / 4);
    const runs = Math.ceil(g.outW / t.pixels);
    const span = (t.pixels - 1) * g.strideW + g.kW; // input values the run's windows cover
    const pixels = [...Array(t.pixels).keys()];
    const cols = [...Array(t.groups).keys()];
    const filterRow = (tap: string, n: string) => filterVec4(g, tap, n);
    const loads = [...Array(span).keys()].map((i) =>
      `let s${i} = select(0.0, x[row + clamp(ix0 + ${i}, 0, ${g.inW - 1})], ` +
      `ix0 + ${i} >= 0 && ix0 + ${i} < ${g.inW});`
    );
    const taps = [...Array(g.kW).keys()].map((kw) =>
      cols.map((c) => `let w${kw}_${c} = ${filterRow(`kh * ${g.kW} + ${kw}`, `n0 + ${c}`)};`)
        .join("\n            ") +
      "\n            " +
      pixels.flatMap((p) =>
        cols.map((c) => `acc${p}_${c} += s${p * g.strideW + kw} * w${kw}_${c};`)
      ).join("\n            ")
    );
    const write = (p: number, c: number) =>
      writeResult(g, this.#epilogue, {
        acc: `acc${p}_${c}`,
        pixel: `out0 + ${p}`,
        group: `n0 + ${c}`,
        valid: `ox0 + ${p} < ${g.outW}`,
      });
    return `
      fn main() {
        _ = uniforms.NAN; // tfjs binds its uniforms to every program: keep the binding
        let n0 = i32(globalId.x) * ${t.groups};
        let run = i32(globalId.y);
        if (n0 >= ${groups} || run >= ${g.batch * g.outH * runs}) { return; }
        let b = run / ${g.outH * runs};
        let oy = (run / ${runs}) % ${g.outH};
        let ox0 = run % ${runs} * ${t.pixels};
        let out0 = (b * ${g.outH} + oy) * ${g.outW} + ox0; // the run's first output pixel
        let ix0 = ox0 * ${g.strideW} - ${g.padLeft};
        ${pixels.flatMap((p) => cols.map((c) => `var acc${p}_${c} = vec4<f32>(0.0);`)).join(" ")}
        for (var kh = 0; kh < ${g.kH}; kh++) {
          let iy = oy * ${g.strideH} - ${g.padTop} + kh;
          if (iy < 0 || iy >= ${g.inH}) { continue; }
          let row = (b * ${g.inH} + iy) * ${g.inW};
          ${loads.join("\n          ")}
          ${taps.join("\n          ")}
        }
        ${pixels.flatMap((p) => cols.map((c) => write(p, c))).join("\n        ")}
      }
    `;
  }
}

/**
 * Runs the forward convolution of `x` (NHWC) with `filter` (`[kh, kw, in,
 * out]`) on `backend`, or returns undefined when the case is not one this
 * kernel covers (the caller then uses tfjs's kernel).
 *
 * @example
 * ```ts ignore
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { fastConv2D } from "./conv2d.ts";
 *
 * const out = fastConv2D(
 *   { x, filter },
 *   { strides: 4, pad: "valid", dataFormat: "NHWC", dilations: 1 },
 *   tf.backend() as WebGPUBackend,
 * );
 * ```
 */
export function fastConv2D(
  inputs: { x: tf.TensorInfo; filter: tf.TensorInfo },
  attrs: tf.Conv2DAttrs,
  backend: WebGPUBackend,
  tile?: Conv2DTile,
): tf.TensorInfo | undefined {
  const g = convGeometry(inputs.x, inputs.filter, attrs);
  if (g === undefined) return undefined;
  const program = g.inC === 1 && tile === undefined
    ? new Conv2DRowProgram(g, ROW_TILE)
    : new Conv2DProgram(g, tile ?? conv2DTile(g));
  return backend.runWebGPUProgram(program, [inputs.x, inputs.filter], "float32");
}

/**
 * `FusedConv2D`: the forward convolution of `x` with `filter`, plus the
 * per-channel `bias` if given, then ReLU if `attrs.activation` is `"relu"`,
 * in one shader; undefined for other activations, a PReLU or leaky-ReLU
 * input, a bias that is not `[out]`, or a convolution {@linkcode fastConv2D}
 * does not cover (the caller then uses tfjs's kernel).
 *
 * @example
 * ```ts ignore
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { fastFusedConv2D } from "./conv2d.ts";
 *
 * const out = fastFusedConv2D(
 *   { x, filter, bias },
 *   { strides: 1, pad: "same", dataFormat: "NHWC", dilations: 1, activation: "linear" },
 *   tf.backend() as WebGPUBackend,
 * );
 * ```
 */
export function fastFusedConv2D(
  inputs: {
    x: tf.TensorInfo;
    filter: tf.TensorInfo;
    bias?: tf.TensorInfo;
    preluActivationWeights?: tf.TensorInfo;
  },
  attrs: tf.FusedConv2DAttrs,
  backend: WebGPUBackend,
): tf.TensorInfo | undefined {
  const { x, filter, bias } = inputs;
  if (attrs.activation !== "linear" && attrs.activation !== "relu") return undefined;
  if (inputs.preluActivationWeights !== undefined) return undefined;
  const g = convGeometry(x, filter, attrs);
  if (g === undefined) return undefined;
  if (bias !== undefined && (bias.dtype !== "float32" || bias.shape.join() !== `${g.outC}`)) {
    return undefined;
  }
  const epilogue = { bias: bias !== undefined, relu: attrs.activation === "relu" };
  const program = g.inC === 1
    ? new Conv2DRowProgram(g, ROW_TILE, epilogue)
    : new Conv2DProgram(g, conv2DTile(g), epilogue);
  return backend.runWebGPUProgram(program, bias ? [x, filter, bias] : [x, filter], "float32");
}
