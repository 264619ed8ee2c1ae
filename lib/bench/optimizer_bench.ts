/**
 * What one optimizer step costs on the host: every replica runs it over the
 * whole weight vector after each all-reduce, so on a fast GPU it is part of
 * every step's time. Measured in this thread on flat vectors of a model's
 * size, as `Replica.applyGradients` runs it.
 *
 * @module
 */

import { createOptimizer, type OptimizerConfig } from "../optim/mod.ts";
import { summarize, type Summary } from "./stats.ts";
import { table } from "./report.ts";
import { spread } from "./report.ts";

/** The optimizers measured: plain SGD, SGD with momentum, Adam. */
export const BENCH_OPTIMIZERS: readonly { label: string; config: OptimizerConfig }[] = [
  { label: "SGD", config: { name: "sgd" } },
  { label: "SGD + momentum", config: { name: "sgd", momentum: 0.9 } },
  { label: "Adam", config: { name: "adam" } },
];

/** One optimizer at one size. */
export interface OptimizerBenchResult {
  /** What was measured, e.g. `"Adam"`. */
  optimizer: string;
  /** Its name for the size, e.g. `"ResNet-18"`. */
  model: string;
  /** Weights updated per step. */
  length: number;
  /** Milliseconds per step. */
  ms: Summary;
  /** Nanoseconds per weight (from the median). */
  nsPerWeight: number;
}

/**
 * Times `repeats` steps of each of {@linkcode BENCH_OPTIMIZERS} on each of
 * `sizes`, after one untimed step (the first allocates nothing, but compiles
 * the loop).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { benchOptimizers } from "./optimizer_bench.ts";
 *
 * const results = benchOptimizers({ sizes: [{ model: "tiny", length: 1000 }], repeats: 2 });
 * assert.deepEqual(results.map((r) => r.optimizer), ["SGD", "SGD + momentum", "Adam"]);
 * assert.ok(results.every((r) => r.ms.median >= 0 && r.length === 1000));
 * ```
 */
export function benchOptimizers(options: {
  sizes: readonly { model: string; length: number }[];
  repeats: number;
}): OptimizerBenchResult[] {
  const results: OptimizerBenchResult[] = [];
  for (const { model, length } of options.sizes) {
    const weights = new Float32Array(length);
    const gradient = new Float32Array(length);
    for (let i = 0; i < length; i++) {
      weights[i] = Math.sin(i) * 0.05;
      gradient[i] = Math.cos(i * 1.3) * 0.01;
    }
    for (const { label, config } of BENCH_OPTIMIZERS) {
      const optimizer = createOptimizer(config, { size: length });
      optimizer.step(weights, gradient, { lr: 0.01 });
      const times: number[] = [];
      for (let r = 0; r < options.repeats; r++) {
        const started = performance.now();
        optimizer.step(weights, gradient, { lr: 0.01 });
        times.push(performance.now() - started);
      }
      const ms = summarize(times);
      results.push({ optimizer: label, model, length, ms, nsPerWeight: ms.median * 1e6 / length });
    }
  }
  return results;
}

/**
 * The optimizer table: ms per step and ns per weight, by size and optimizer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { optimizerTable } from "./optimizer_bench.ts";
 *
 * const ms = { median: 2, min: 1.5, max: 3, count: 3 };
 * const text = optimizerTable([{ optimizer: "SGD", model: "NiN", length: 2e6, ms, nsPerWeight: 1 }]);
 * assert.match(text, /^NiN, 2,000,000 +SGD +2\.00 \(1\.50–3\.00\) +1\.00$/m);
 * ```
 */
export function optimizerTable(results: readonly OptimizerBenchResult[]): string {
  const rows = [["weights", "optimizer", "ms per step (min–max)", "ns per weight"]];
  for (const r of results) {
    rows.push([
      `${r.model}, ${r.length.toLocaleString("en-US")}`,
      r.optimizer,
      spread(r.ms, 2),
      r.nsPerWeight.toFixed(2),
    ]);
  }
  return table(rows);
}
