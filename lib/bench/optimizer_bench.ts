/**
 * What one optimizer step costs on the host. Unsharded, every replica runs it
 * over the whole weight vector after each all-reduce; sharded (ZeRO stage 1,
 * the default with several workers in a process), each runs it over its
 * 1/N chunk. Measured in this thread on flat vectors of a model's size (or
 * of one worker's chunk of it), as `Replica.applyGradients` and
 * `Replica.updateChunk` run it, with the scalar JavaScript loop and with the
 * WebAssembly SIMD one.
 *
 * @module
 */

import { createOptimizer, type OptimizerConfig } from "../optim/mod.ts";
import { SIMD_AVAILABLE } from "../optim/_simd.ts";
import { summarize, type Summary } from "./stats.ts";
import { table } from "./report.ts";
import { spread } from "./report.ts";

/** The optimizers measured: plain SGD, SGD with momentum, Adam. */
export const BENCH_OPTIMIZERS: readonly { label: string; config: OptimizerConfig }[] = [
  { label: "SGD", config: { name: "sgd" } },
  { label: "SGD + momentum", config: { name: "sgd", momentum: 0.9 } },
  { label: "Adam", config: { name: "adam" } },
];

/** One optimizer at one size, worker count and update loop. */
export interface OptimizerBenchResult {
  /** What was measured, e.g. `"Adam"`. */
  optimizer: string;
  /** Its name for the size, e.g. `"ResNet-18"`. */
  model: string;
  /** The model's trainable weights. */
  length: number;
  /** Workers sharing the update (1: unsharded, every worker updates everything). */
  workers: number;
  /** Weights one worker updates per step: its chunk, `length / workers` rounded up. */
  chunk: number;
  /** The update loop: `"scalar"` (JavaScript) or `"simd"` (WebAssembly SIMD). */
  loop: "scalar" | "simd";
  /** Milliseconds per step, on one worker. */
  ms: Summary;
  /** Nanoseconds per weight updated (from the median). */
  nsPerWeight: number;
  /** Bytes of optimizer state one worker holds. */
  stateBytes: number;
}

/**
 * Times `repeats` steps of each of {@linkcode BENCH_OPTIMIZERS} on each of
 * `sizes`, for each worker count in `workers` (a worker's chunk) and each
 * loop, after one untimed step (which compiles the loop and touches the
 * memory). Loops that cannot run here (no WebAssembly SIMD) are left out.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { benchOptimizers } from "./optimizer_bench.ts";
 *
 * const results = benchOptimizers({
 *   sizes: [{ model: "tiny", length: 1000 }],
 *   workers: [1, 4],
 *   repeats: 2,
 * });
 * assert.equal(results.length, 3 * 2 * 2); // optimizers × worker counts × loops
 * const adam = results.filter((r) => r.optimizer === "Adam" && r.loop === "simd");
 * assert.deepEqual(adam.map((r) => [r.chunk, r.stateBytes]), [[1000, 8000], [250, 2000]]);
 * ```
 */
export function benchOptimizers(options: {
  sizes: readonly { model: string; length: number }[];
  workers?: readonly number[];
  repeats: number;
}): OptimizerBenchResult[] {
  const results: OptimizerBenchResult[] = [];
  const loops = (["scalar", "simd"] as const).filter((loop) => loop === "scalar" || SIMD_AVAILABLE);
  for (const { model, length } of options.sizes) {
    const weights = new Float32Array(length);
    const gradient = new Float32Array(length);
    for (let i = 0; i < length; i++) {
      weights[i] = Math.sin(i) * 0.05;
      gradient[i] = Math.cos(i * 1.3) * 0.01;
    }
    for (const workers of options.workers ?? [1]) {
      const chunk = Math.ceil(length / workers);
      const [w, g] = [weights.subarray(0, chunk), gradient.subarray(0, chunk)];
      for (const { label, config } of BENCH_OPTIMIZERS) {
        for (const loop of loops) {
          const optimizer = createOptimizer(config, { size: chunk, simd: loop === "simd" });
          optimizer.step(w, g, { lr: 0.01 });
          const times: number[] = [];
          for (let r = 0; r < options.repeats; r++) {
            const started = performance.now();
            optimizer.step(w, g, { lr: 0.01 });
            times.push(performance.now() - started);
          }
          const ms = summarize(times);
          const slots = Object.keys(optimizer.state().slots).length;
          results.push({
            optimizer: label,
            model,
            length,
            workers,
            chunk,
            loop,
            ms,
            nsPerWeight: ms.median * 1e6 / chunk,
            stateBytes: 4 * slots * chunk,
          });
        }
      }
    }
  }
  return results;
}

/**
 * The optimizer table: per worker, ms per step and ns per weight, by size,
 * optimizer, worker count and loop, with the state each worker holds.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { optimizerTable } from "./optimizer_bench.ts";
 *
 * const ms = { median: 2, min: 1.5, max: 3, count: 3 };
 * const text = optimizerTable([{
 *   optimizer: "Adam", model: "NiN", length: 2e6, workers: 4, chunk: 5e5, loop: "simd", ms,
 *   nsPerWeight: 4, stateBytes: 4e6,
 * }]);
 * assert.match(text, /^NiN, 2,000,000 +Adam +4 +simd +2\.00 \(1\.50–3\.00\) +4\.00 +3\.8$/m);
 * ```
 */
export function optimizerTable(results: readonly OptimizerBenchResult[]): string {
  const rows = [[
    "weights",
    "optimizer",
    "workers",
    "loop",
    "ms per step per worker (min–max)",
    "ns per weight",
    "state per worker MiB",
  ]];
  for (const r of results) {
    rows.push([
      `${r.model}, ${r.length.toLocaleString("en-US")}`,
      r.optimizer,
      String(r.workers),
      r.loop,
      spread(r.ms, 2),
      r.nsPerWeight.toFixed(2),
      (r.stateBytes / 2 ** 20).toFixed(1),
    ]);
  }
  return table(rows);
}
