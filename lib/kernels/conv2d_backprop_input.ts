/**
 * A faster `Conv2DBackpropInput` (the input gradient dx of a 2-D
 * convolution, a transposed convolution) for tfjs' WebGPU backend.
 *
 *     dx[n, y, x, ci] = Σ_{kh, kw, co} dy[n, (y + pad − kh)/s, (x + pad − kw)/s, co] · W[kh, kw, ci, co]
 *
 * over the taps where both divisions are exact and land inside dy. The
 * kernel is a register-tiled implicit GEMM: input pixels are its rows, input
 * channels its columns, and taps × output channels its inner dimension.
 *
 * With stride s, only every s-th tap reaches a given pixel: the taps with
 * kh ≡ y + pad (mod s). So the pixels are split into s_h·s_w *phases* by
 * ((y + pad) mod s_h, (x + pad) mod s_w), one per workgroup z, and each phase
 * loops over exactly its taps kh = r + s·t: no iteration is spent on a tap
 * that cannot contribute (NiN's 11×11 stride-4 layer would otherwise skip
 * 15 of every 16). Within a phase, consecutive pixels of a row meet
 * consecutive columns of dy.
 *
 * Each invocation computes up to 128 outputs in registers (say 8 pixels ×
 * 16 channels, or 32 pixels × 1 channel for a 1-channel image); neighbouring
 * invocations take neighbouring pixels, so their dy reads are adjacent and
 * their filter reads the same. dy and W are read as vec4s along output
 * channels when those are a multiple of 4 (4 FMAs per value loaded per
 * operand), and dx is written as vec4s when input channels allow. Shapes are
 * baked into the shader. As in `conv2d_backprop_filter.ts`, no workgroup
 * memory is used: on llvmpipe, where every memory access is a loop over the
 * SIMD lanes, staging tiles there costs more than it saves. The layout has
 * not been measured on a GPU.
 *
 * Unsupported cases (NCHW, non-float32, empty tensors) run tfjs' own kernel.
 *
 * @module
 */

import type * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
// Registers the webgpu backend and its kernels, which this module replaces.
import "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";
import type { WebGPUBackend, WebGPUProgram } from "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";
import { backpropGeometry, type ConvGeometry } from "./geometry.ts";

/** How the GEMM is cut into threads; see {@linkcode chooseTiles}. */
interface Tiles {
  /** Pixels per thread, interleaved with the other threads of the workgroup. */
  rm: number;
  /** Input channels per thread. */
  rn: number;
  /** Threads per workgroup, all along pixels: a multiple of 8 up to 64. */
  threads: number;
}

/** Most threads per workgroup. */
const MAX_THREADS = 64;
/** llvmpipe's SIMD width: workgroups come in multiples of it. */
const SIMD_WIDTH = 8;
/** Pixels per thread to choose from, largest first: ties go to bigger tiles. */
const PIXEL_TILES = [32, 16, 8, 4];
/** Input channels per thread to choose from. */
const CHANNEL_TILES = [16, 12, 8, 4, 3, 2, 1];
/** Upper bound on rm·rn accumulators per thread, to stay in registers on GPUs. */
const MAX_ACCUMULATORS = 128;
/** Cost of one FMA relative to one load, per lane (llvmpipe: about 1/30). */
const FMA_COST = 1 / 32;

/**
 * Picks the register tile for `pixels` rows (in the largest phase) and
 * `channels` columns: the one that minimises padded outputs × (FMA cost +
 * loads per output), where a thread loads rm + rn values per output channel
 * (or vec4 of them) for rm·rn FMAs (or 4·rm·rn). Small problems get small
 * workgroups, so that no SIMD batch is idle.
 */
function chooseTiles(pixels: number, channels: number): Tiles {
  const padded = (extent: number, size: number) => Math.ceil(extent / size) * size;
  let best = { rm: 4, rn: 1, cost: Infinity };
  for (const rm of PIXEL_TILES) {
    for (const rn of CHANNEL_TILES) {
      if (rm * rn > MAX_ACCUMULATORS) continue;
      const cost = padded(pixels, rm * SIMD_WIDTH) * padded(channels, rn) *
        (FMA_COST + 1 / rm + 1 / rn);
      if (cost < best.cost) best = { rm, rn, cost };
    }
  }
  const threads = Math.min(MAX_THREADS, padded(Math.ceil(pixels / best.rm), SIMD_WIDTH));
  return { rm: best.rm, rn: best.rn, threads };
}

/** Pixels of the largest phase along one axis: ⌈extent / stride⌉. */
function phaseExtent(extent: number, stride: number): number {
  return Math.ceil(extent / stride);
}

/** dx for one phase per workgroup z; see the module docs. */
class BackpropInputProgram implements WebGPUProgram {
  variableNames = ["dy", "W"];
  outputShape: number[];
  shaderKey: string;
  // Any layout with a y part makes tfjs declare `main()` without an index;
  // the shader finds its place from the workgroup and local ids itself.
  dispatchLayout = { x: [0], y: [1] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  variableComponents: number[];
  outputComponent: number;
  readonly #g: ConvGeometry;
  readonly #t: Tiles;

  constructor(g: ConvGeometry, t: Tiles) {
    this.#g = g;
    this.#t = t;
    this.outputShape = [g.batch, g.inH, g.inW, g.inC];
    this.workgroupSize = [t.threads, 1, 1];
    const vecCo = g.outC % 4 === 0 ? 4 : 1;
    this.variableComponents = [vecCo, vecCo];
    this.outputComponent = g.inC % 4 === 0 && t.rn % 4 === 0 ? 4 : 1;
    const pixels = g.batch * phaseExtent(g.inH, g.strideH) * phaseExtent(g.inW, g.strideW);
    this.dispatch = [
      Math.ceil(pixels / (t.rm * t.threads)),
      Math.ceil(g.inC / t.rn),
      g.strideH * g.strideW,
    ];
    this.shaderKey = `fastConv2DBackpropInput_${Object.values(g).join("_")}_${
      Object.values(t).join("_")
    }`;
  }

  getUserCode(): string {
    const g = this.#g;
    const t = this.#t;
    const vec = g.outC % 4 === 0;
    const coSteps = vec ? g.outC / 4 : g.outC;
    const zero = vec ? "vec4<f32>(0.0)" : "0.0";
    const pixels = Array.from({ length: t.rm }, (_, i) => i);
    const channels = Array.from({ length: t.rn }, (_, j) => j);

    // Per pixel: its place in the phase, dy's column for tap (0, 0) and the
    // output element. Pixels past the phase are clamped and never written.
    const setup = pixels.map((i) =>
      `let p${i} = min(pBase + ${i * t.threads}, last);
        let jx${i} = p${i} % max(nX, 1);
        let jy${i} = (p${i} / max(nX, 1)) % max(nY, 1);
        let b${i} = p${i} / max(nX * nY, 1);
        let oy${i} = cy + jy${i};
        let ox${i} = cx + jx${i};
        let dyAt${i} = ((b${i} * ${g.outH} + oy${i}) * ${g.outW} + ox${i}) * ${coSteps};`
    );
    // Per tap: which pixels it reaches, and where its rows of dy and W start.
    const tap = [
      ...pixels.map((i) =>
        `let ok${i} = oy${i} >= t && oy${i} - t < ${g.outH} && ox${i} >= u && ox${i} - u < ${g.outW};
            let dyRow${i} = select(0, dyAt${i} - tapShift, ok${i});`
      ),
      ...channels.map((j) => `let wRow${j} = (tapRow + ci${j}) * ${coSteps};`),
    ];
    const loads = [
      ...pixels.map((i) => `let a${i} = select(${zero}, dy[dyRow${i} + c], ok${i});`),
      ...channels.map((j) => `let w${j} = W[wRow${j} + c];`),
    ];
    const fmas = pixels.flatMap((i) =>
      channels.map((j) =>
        vec
          ? `acc${i}_${j} = acc${i}_${j} + dot(a${i}, w${j});`
          : `acc${i}_${j} = fma(a${i}, w${j}, acc${i}_${j});`
      )
    );
    const writes = pixels.flatMap((i) => {
      const guard = `if (pBase + ${i * t.threads} <= last`;
      const at = `((b${i} * ${g.inH} + y0 + jy${i} * ${g.strideH}) * ${g.inW} + ` +
        `x0 + jx${i} * ${g.strideW}) * ${g.inC} + ciBase`;
      if (this.outputComponent === 4) {
        return Array.from({ length: t.rn / 4 }, (_, q) => {
          const sums = [0, 1, 2, 3].map((k) => `acc${i}_${q * 4 + k}`).join(", ");
          return `${guard} && ciBase + ${q * 4} < ${g.inC}) {
            result[(${at}) / 4 + ${q}] = vec4<f32>(${sums});
          }`;
        });
      }
      return channels.map((j) =>
        `${guard} && ciBase + ${j} < ${g.inC}) {
          result[${at} + ${j}] = acc${i}_${j};
        }`
      );
    });
    return `
      // The first pixel of phase residue r along an axis, and how many follow
      // every s-th pixel after it.
      fn phaseStart(r: i32, pad: i32, s: i32) -> i32 {
        return ((r - pad) % s + s) % s;
      }
      fn phaseCount(start: i32, extent: i32, s: i32) -> i32 {
        return max(0, (extent - start + s - 1) / s);
      }

      fn main() {
        // tfjs binds its uniforms to every program; a pipeline with an
        // 'auto' layout only has the bindings the shader uses.
        _ = uniforms.NAN;
        // The phase: pixels with (y + pad) ≡ ry (mod s) take taps kh = ry + s·t.
        let ry = i32(workgroupId.z) / ${g.strideW};
        let rx = i32(workgroupId.z) % ${g.strideW};
        let y0 = phaseStart(ry, ${g.padTop}, ${g.strideH});
        let x0 = phaseStart(rx, ${g.padLeft}, ${g.strideW});
        let nY = phaseCount(y0, ${g.inH}, ${g.strideH});
        let nX = phaseCount(x0, ${g.inW}, ${g.strideW});
        let nT = phaseCount(ry, ${g.kH}, ${g.strideH});
        let nU = phaseCount(rx, ${g.kW}, ${g.strideW});
        // dy row and column for tap (0, 0) of the phase's first pixel.
        let cy = (y0 + ${g.padTop} - ry) / ${g.strideH};
        let cx = (x0 + ${g.padLeft} - rx) / ${g.strideW};
        let last = ${g.batch} * nY * nX - 1;
        let pBase = i32(workgroupId.x) * ${t.rm * t.threads} + i32(localId.x);
        let ciBase = i32(workgroupId.y) * ${t.rn};
        ${channels.map((j) => `let ci${j} = min(ciBase + ${j}, ${g.inC - 1});`).join("\n")}
        ${setup.join("\n")}
        ${pixels.flatMap((i) => channels.map((j) => `var acc${i}_${j} = 0.0;`)).join("\n")}
        for (var t = 0; t < nT; t++) {
          for (var u = 0; u < nU; u++) {
            let tapRow = ((ry + t * ${g.strideH}) * ${g.kW} + rx + u * ${g.strideW}) * ${g.inC};
            let tapShift = (t * ${g.outW} + u) * ${coSteps};
            ${tap.join("\n")}
            for (var c = 0; c < ${coSteps}; c++) {
              ${loads.join("\n")}
              ${fmas.join("\n")}
            }
          }
        }
        ${writes.join("\n")}
      }
    `;
  }
}

/**
 * Runs `Conv2DBackpropInput` (the gradient of a convolution with respect to
 * its NHWC input, of shape `attrs.inputShape`) for `dy` and the `[kh, kw, in,
 * out]` `filter` on `backend`, or returns undefined when the case is not one
 * this kernel covers (NCHW, non-float32, empty tensors): the caller then
 * uses tfjs' kernel.
 *
 * @example
 * ```ts ignore
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import type { WebGPUBackend } from "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";
 * import { fastConv2DBackpropInput } from "./conv2d_backprop_input.ts";
 *
 * await tf.setBackend("webgpu");
 * const dy = tf.randomNormal([16, 7, 7, 32]);
 * const filter = tf.randomNormal([5, 5, 12, 32]);
 * const dx = fastConv2DBackpropInput(
 *   { dy, filter },
 *   { strides: 1, pad: "same", dataFormat: "NHWC", inputShape: [16, 7, 7, 12] },
 *   tf.backend() as WebGPUBackend,
 * );
 * ```
 */
export function fastConv2DBackpropInput(
  inputs: { dy: tf.TensorInfo; filter: tf.TensorInfo },
  attrs: tf.Conv2DBackpropInputAttrs,
  backend: WebGPUBackend,
): tf.TensorInfo | undefined {
  const { dy, filter } = inputs;
  const x = { shape: attrs.inputShape, dtype: "float32" as const };
  const g = backpropGeometry({ x, filter, dy }, attrs);
  if (g === undefined) return undefined;
  const pixels = g.batch * phaseExtent(g.inH, g.strideH) * phaseExtent(g.inW, g.strideW);
  const program = new BackpropInputProgram(g, chooseTiles(pixels, g.inC));
  return backend.runWebGPUProgram(program, [dy, filter], "float32");
}
