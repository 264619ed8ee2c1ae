/**
 * A faster `Conv2DBackpropFilter` (the weight gradient dW of a 2-D
 * convolution) for tfjs' WebGPU backend.
 *
 * tfjs-backend-webgpu 4.22 computes dW with one thread per filter element,
 * each looping over batch × outHeight × outWidth. This module computes it as
 * an implicit GEMM with split-K,
 *
 *     dW[kh, kw, ci, co] = Σ_{n, oy, ox} x[n, oy·s + kh − pad, ox·s + kw − pad, ci] · dy[n, oy, ox, co]
 *
 * with M = kh·kw·ci rows (the filter layout, so row-major M×N *is* the
 * filter), N = co columns and K = batch·outHeight·outWidth terms, in two
 * passes:
 *
 * 1. Each thread accumulates a register tile of up to 128 outputs (say 16
 *    filter rows × 8 output channels) over every `lanes`-th term of one
 *    slice of K and writes it to a float32 partial buffer
 *    `[slices · lanes, M, N rounded up to 4]`.
 * 2. A reduce pass adds the partials in a fixed order, so results are
 *    deterministic (no float atomics).
 *
 * Shapes, strides and padding are baked into the shader as constants.
 *
 * The design was measured on Mesa llvmpipe (22.3), which runs 8 invocations
 * per SIMD batch and turns every load or store of a storage or workgroup
 * buffer into a loop over the 8 lanes. Loads, not FMAs, are the cost, so the
 * tiles are large and loads are vec4 where the channel counts allow. Tiles
 * staged in workgroup memory were tried first and were 1.5–4× slower on
 * NiN's layers: filling them adds a store loop per element, and each barrier
 * spills every accumulator. Giving the 8 lanes of a batch consecutive terms
 * of K, rather than different output tiles, keeps their reads of `x` and
 * `dy` on neighbouring addresses, which was 3× faster or more than spreading
 * them over M. On a GPU this layout leans on the caches instead of workgroup
 * memory; it has not been measured on one.
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
  /** Filter rows (M) per thread: 4, 8, 12 or 16. */
  rm: number;
  /** Output channels (N) per thread: 4, 8, 12 or 16. */
  rn: number;
  /** Threads of a workgroup that split one tile's K terms between them (8 or 1). */
  lanes: number;
  /** Tiles along M per workgroup. */
  tm: number;
  /** Contiguous slices of K, one per workgroup along z. */
  slices: number;
}

/** Tile sizes along M and N, largest first: ties go to fewer, bigger tiles. */
const TILE_SIZES = [16, 12, 8, 4];
/** Upper bound on rm·rn accumulators per thread, to stay in registers on GPUs. */
const MAX_ACCUMULATORS = 128;
/** Cost of one FMA relative to one load, per lane (llvmpipe: about 1/30). */
const FMA_COST = 1 / 32;
/** Split K over lanes when each lane still gets this many terms. */
const MIN_TERMS_PER_LANE = 16;
/** Slice K until there are this many workgroups (a few per llvmpipe thread)... */
const TARGET_WORKGROUPS = 32;
/** ...but keep at least this many terms per thread and slice... */
const MIN_TERMS_PER_SLICE = 64;
/** ...and the partial buffer well under WebGPU's default 128 MiB binding limit. */
const MAX_PARTIAL_BYTES = 64 * 2 ** 20;

/**
 * Picks tile sizes and the K split for a problem of M×N outputs and K terms.
 * The tile minimises padded outputs × (FMA cost + loads per output): a
 * thread loads rm/4 + rn/4 vec4s per term for rm·rn FMAs.
 */
function chooseTiles(m: number, n: number, k: number): Tiles {
  const padded = (extent: number, size: number) => Math.ceil(extent / size) * size;
  let rm = 4;
  let rn = 4;
  let best = Infinity;
  for (const sizeM of TILE_SIZES) {
    for (const sizeN of TILE_SIZES) {
      if (sizeM * sizeN > MAX_ACCUMULATORS) continue;
      const cost = padded(m, sizeM) * padded(n, sizeN) *
        (FMA_COST + 1 / (4 * sizeM) + 1 / (4 * sizeN));
      if (cost < best) [best, rm, rn] = [cost, sizeM, sizeN];
    }
  }
  // Partial sums that fit, each of M × N rounded up to 4.
  const maxParts = Math.max(1, Math.floor(MAX_PARTIAL_BYTES / (16 * m * Math.ceil(n / 4))));
  const lanes = k >= 8 * MIN_TERMS_PER_LANE && maxParts >= 8 ? 8 : 1;
  const mTiles = Math.ceil(m / rm);
  const tm = Math.min(mTiles, lanes === 8 ? 8 : 64);
  const perSlice = Math.ceil(n / rn) * Math.ceil(mTiles / tm);
  const maxSlices = Math.max(
    1,
    Math.min(Math.floor(k / (lanes * MIN_TERMS_PER_SLICE)), Math.floor(maxParts / lanes)),
  );
  const slices = Math.min(maxSlices, Math.ceil(TARGET_WORKGROUPS / perSlice));
  return { rm, rn, lanes, tm, slices };
}

/**
 * Pass 1: partial[p, m, n] = Σ over the terms of K of partial p, as vec4
 * along n; p = slice · lanes + lane.
 */
class PartialGemmProgram implements WebGPUProgram {
  variableNames = ["x", "dy"];
  outputShape: number[];
  shaderKey: string;
  // Any layout with a y part makes tfjs declare `main()` without an index;
  // the shader finds its place from the workgroup and local ids itself.
  dispatchLayout = { x: [0], y: [1] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  variableComponents: number[];
  outputComponent = 4;
  readonly #g: ConvGeometry;
  readonly #t: Tiles;

  constructor(g: ConvGeometry, t: Tiles) {
    this.#g = g;
    this.#t = t;
    const m = g.kH * g.kW * g.inC;
    const n4 = Math.ceil(g.outC / 4) * 4;
    this.outputShape = [t.slices * t.lanes, m, n4];
    this.variableComponents = [g.inC % 4 === 0 ? 4 : 1, g.outC % 4 === 0 ? 4 : 1];
    this.workgroupSize = [t.lanes, t.tm, 1];
    this.dispatch = [
      Math.ceil(g.outC / t.rn),
      Math.ceil(Math.ceil(m / t.rm) / t.tm),
      t.slices,
    ];
    this.shaderKey = `fastConv2DBackpropFilter_${Object.values(g).join("_")}_${
      Object.values(t).join("_")
    }`;
  }

  getUserCode(): string {
    const g = this.#g;
    const t = this.#t;
    const M = g.kH * g.kW * g.inC;
    const N = g.outC;
    const N4 = Math.ceil(N / 4);
    const K = g.batch * g.outH * g.outW;
    const kPerSlice = Math.ceil(K / t.slices);
    const vecX = g.inC % 4 === 0;
    const vecDy = N % 4 === 0;
    // Only windows that can leave the image need bounds checks.
    const padded = g.padTop > 0 || g.padLeft > 0 ||
      (g.outH - 1) * g.strideH + g.kH > g.inH + g.padTop ||
      (g.outW - 1) * g.strideW + g.kW > g.inW + g.padLeft;

    // Per-thread constants: where each x load of the tile's rows sits
    // relative to the window corner. Rows past M are clamped (and never
    // written); a vec4 load covers 4 channels of one filter tap.
    const rowsPerLoad = vecX ? 4 : 1;
    const setup: string[] = [];
    const xLoads: string[] = [];
    for (let q = 0; q < t.rm / rowsPerLoad; q++) {
      setup.push(`let row${q} = min(m0 + ${q * rowsPerLoad}, ${M - rowsPerLoad});`);
      setup.push(`let kh${q} = row${q} / ${g.inC * g.kW};`);
      setup.push(`let kw${q} = (row${q} / ${g.inC}) % ${g.kW};`);
      setup.push(`let off${q} = (kh${q} * ${g.inW} + kw${q}) * ${g.inC} + row${q} % ${g.inC};`);
      const index = `corner + off${q}`;
      const zero = vecX ? "vec4<f32>(0.0)" : "0.0";
      const load = (i: string) => vecX ? `x[(${i}) / 4]` : `x[${i}]`;
      if (padded) {
        const inside = `iy0 + kh${q} >= 0 && iy0 + kh${q} < ${g.inH} && ` +
          `ix0 + kw${q} >= 0 && ix0 + kw${q} < ${g.inW}`;
        xLoads.push(`let in${q} = ${inside};`);
        xLoads.push(`let a${q} = select(${zero}, ${load(`select(0, ${index}, in${q})`)}, in${q});`);
      } else {
        xLoads.push(`let a${q} = ${load(index)};`);
      }
    }
    // dy columns past N are clamped: they fill the padding of the partial
    // buffer, which the reduce pass never reads.
    const dyLoads: string[] = [];
    for (let c = 0; c < t.rn / 4; c++) {
      if (vecDy) {
        setup.push(`let col${c} = min(n0 / 4 + ${c}, ${N4 - 1});`);
        dyLoads.push(`let b${c} = dy[k * ${N4} + col${c}];`);
      } else {
        const cols = [0, 1, 2, 3].map((j) => `dy[k * ${N} + min(n0 + ${c * 4 + j}, ${N - 1})]`);
        dyLoads.push(`let b${c} = vec4<f32>(${cols.join(", ")});`);
      }
    }
    const declarations: string[] = [];
    const fmas: string[] = [];
    const writes: string[] = [];
    for (let i = 0; i < t.rm; i++) {
      const a = vecX ? `a${Math.floor(i / 4)}[${i % 4}]` : `a${i}`;
      for (let c = 0; c < t.rn / 4; c++) {
        declarations.push(`var acc${i}_${c} = vec4<f32>(0.0);`);
        fmas.push(`acc${i}_${c} = fma(vec4<f32>(${a}), b${c}, acc${i}_${c});`);
        writes.push(
          `if (m0 + ${i} < ${M} && n0 / 4 + ${c} < ${N4}) {
            result[(p * ${M} + m0 + ${i}) * ${N4} + n0 / 4 + ${c}] = acc${i}_${c};
          }`,
        );
      }
    }
    return `
      fn main() {
        // tfjs binds its uniforms to every program; a pipeline with an
        // 'auto' layout only has the bindings the shader uses.
        _ = uniforms.NAN;
        let lane = i32(localId.x);
        let m0 = (i32(workgroupId.y) * ${t.tm} + i32(localId.y)) * ${t.rm};
        let n0 = i32(workgroupId.x) * ${t.rn};
        let slice = i32(workgroupId.z);
        let p = slice * ${t.lanes} + lane;
        let kEnd = min((slice + 1) * ${kPerSlice}, ${K});
        ${setup.join("\n")}
        ${declarations.join("\n")}
        for (var k = slice * ${kPerSlice} + lane; k < kEnd; k += ${t.lanes}) {
          let ox = k % ${g.outW};
          let oy = (k / ${g.outW}) % ${g.outH};
          let b = k / ${g.outW * g.outH};
          let iy0 = oy * ${g.strideH} - ${g.padTop};
          let ix0 = ox * ${g.strideW} - ${g.padLeft};
          let corner = ((b * ${g.inH} + iy0) * ${g.inW} + ix0) * ${g.inC};
          ${xLoads.join("\n")}
          ${dyLoads.join("\n")}
          ${fmas.join("\n")}
        }
        ${writes.join("\n")}
      }
    `;
  }
}

/** Pass 2: dW[m, n] = Σ_p partial[p, m, n], in order of p. */
class PartialSumProgram implements WebGPUProgram {
  variableNames = ["partial"];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [0], y: [1] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number] = [64, 1, 1];
  variableComponents: number[];
  outputComponent: number;
  readonly #parts: number;
  readonly #m: number;
  readonly #n: number;

  constructor(filterShape: number[], parts: number) {
    const [kH, kW, inC, outC] = filterShape;
    this.outputShape = filterShape;
    this.#parts = parts;
    this.#m = kH * kW * inC;
    this.#n = outC;
    // With N a multiple of 4 the filter and the partials share their vec4
    // layout; otherwise each thread sums one scalar.
    this.outputComponent = outC % 4 === 0 ? 4 : 1;
    this.variableComponents = [this.outputComponent];
    this.dispatch = [Math.ceil((this.#m * outC) / this.outputComponent / 64), 1, 1];
    this.shaderKey = `fastConv2DBackpropFilterSum_${this.#m}_${outC}_${parts}`;
  }

  getUserCode(): string {
    const n4 = Math.ceil(this.#n / 4) * 4;
    const vec = this.outputComponent === 4;
    const size = (this.#m * this.#n) / this.outputComponent;
    // Element i of the filter and its offset in partial 0.
    const offset = vec ? "i" : `(i / ${this.#n}) * ${n4} + i % ${this.#n}`;
    const stride = (this.#m * n4) / this.outputComponent;
    return `
      fn main() {
        _ = uniforms.NAN;
        let i = i32(globalId.x);
        if (i >= ${size}) {
          return;
        }
        let first = ${offset};
        var sum = partial[first];
        for (var p = 1; p < ${this.#parts}; p++) {
          sum = sum + partial[p * ${stride} + first];
        }
        result[i] = sum;
      }
    `;
  }
}

/**
 * Runs `Conv2DBackpropFilter` (the gradient of a convolution with respect to
 * its `[kh, kw, in, out]` filter) for NHWC `x` and `dy` on `backend`, or
 * returns undefined when the case is not one this kernel covers (NCHW,
 * non-float32, empty tensors): the caller then uses tfjs' kernel.
 *
 * @example
 * ```ts ignore
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import type { WebGPUBackend } from "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";
 * import { fastConv2DBackpropFilter } from "./conv2d_backprop_filter.ts";
 *
 * await tf.setBackend("webgpu");
 * const x = tf.randomNormal([16, 67, 67, 1]);
 * const dy = tf.randomNormal([16, 15, 15, 12]);
 * const dW = fastConv2DBackpropFilter(
 *   { x, dy },
 *   { strides: 4, pad: "valid", dataFormat: "NHWC", filterShape: [11, 11, 1, 12] },
 *   tf.backend() as WebGPUBackend,
 * );
 * ```
 */
export function fastConv2DBackpropFilter(
  inputs: { x: tf.TensorInfo; dy: tf.TensorInfo },
  attrs: tf.Conv2DBackpropFilterAttrs,
  backend: WebGPUBackend,
): tf.TensorInfo | undefined {
  const { x, dy } = inputs;
  const filter = { shape: attrs.filterShape, dtype: "float32" as const };
  const g = backpropGeometry({ x, filter, dy }, attrs);
  if (g === undefined) return undefined;
  const tiles = chooseTiles(g.kH * g.kW * g.inC, g.outC, g.batch * g.outH * g.outW);
  const partial = backend.runWebGPUProgram(new PartialGemmProgram(g, tiles), [x, dy], "float32");
  const sum = new PartialSumProgram(attrs.filterShape, tiles.slices * tiles.lanes);
  const result = backend.runWebGPUProgram(sum, [partial], "float32");
  backend.disposeData(partial.dataId);
  return result;
}
