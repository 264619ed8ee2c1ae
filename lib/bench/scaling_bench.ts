/**
 * Scaling benchmark: training throughput with 1, 2, 4 … workers on the real
 * training path (`train()`), each worker taking the same number of images
 * per step, and where each step's time goes; plus the overhead of one worker
 * against a plain single-process tfjs loop.
 *
 * @module
 */

import * as tf from "@tensorflow/tfjs-core";
import type { AllReduceAlgorithm } from "../collective/registry.ts";
import type { KernelSet } from "../kernels/mod.ts";
import { createNiN } from "../model/nin.ts";
import { type BackendName, initBackend } from "../train/shared/backend.ts";
import type { StepTiming } from "../train/shared/protocol.ts";
import { toModelInput } from "../train/shared/model_input.ts";
import { train } from "../train/coordinator/train.ts";
import { summarize, type Summary, syntheticDataset } from "./stats.ts";

/** The model and batch a benchmark trains. */
export interface BenchModel {
  /** Input side. */
  inputSize: number;
  /** NiN width multiplier. */
  width: number;
  /** Images per worker per step. */
  perWorkerBatch: number;
  /** Backend. Default `"webgpu"`. */
  backend?: BackendName;
  /** WebGPU kernel set. Default `"fast"`. */
  kernels?: KernelSet;
}

/** Options for {@linkcode benchScaling}. */
export interface ScalingBenchOptions extends BenchModel {
  /** Worker counts to measure. */
  workers: readonly number[];
  /** Untimed steps first. */
  warmupSteps: number;
  /** Steps per timed repetition. */
  stepsPerRepeat: number;
  /** Timed repetitions (their median is reported). */
  repeats: number;
  /** All-reduce algorithm. Default `"shared"`. */
  allReduce?: AllReduceAlgorithm;
  /** Called after each worker count. */
  onResult?: (result: ScalingResult) => void;
}

/** Median time of each step phase, averaged over workers, in milliseconds. */
export type StepBreakdown = Omit<StepTiming, "tensors">;

/** One worker count's result. */
export interface ScalingResult {
  /** Number of workers. */
  workers: number;
  /** Global batch (workers × images per worker). */
  batchSize: number;
  /** Images per second, over the timed repetitions. */
  imagesPerSec: Summary;
  /** Milliseconds per step, over the timed steps. */
  stepMs: Summary;
  /** Throughput over that of the first worker count measured (normally 1). */
  speedup: number;
  /** `speedup / (workers / first worker count)`. */
  efficiency: number;
  /** Where a step's time goes, from a separate profiled run of `stepsPerRepeat` steps. */
  breakdown: StepBreakdown;
}

/**
 * Trains `warmupSteps + repeats × stepsPerRepeat` steps on synthetic data for
 * each worker count and reports throughput (median over repetitions, with
 * spread), then trains `stepsPerRepeat` more with profiling on for the
 * breakdown (profiling adds two device synchronisations per step, so the
 * throughput comes from the unprofiled run).
 *
 * @example
 * ```ts ignore
 * import { benchScaling } from "./scaling_bench.ts";
 *
 * const results = await benchScaling({
 *   workers: [1, 2],
 *   inputSize: 68,
 *   width: 0.25,
 *   perWorkerBatch: 32,
 *   warmupSteps: 2,
 *   stepsPerRepeat: 5,
 *   repeats: 3,
 * });
 * console.log(results.map((r) => `${r.workers}: ${r.imagesPerSec.median.toFixed(1)} images/s`));
 * ```
 */
export async function benchScaling(options: ScalingBenchOptions): Promise<ScalingResult[]> {
  const results: ScalingResult[] = [];
  for (const workers of options.workers) {
    const batchSize = workers * options.perWorkerBatch;
    const timed = options.repeats * options.stepsPerRepeat;
    const completions = await stepCompletions(options, {
      workers,
      steps: options.warmupSteps + timed,
      profile: false,
    });
    const windows: number[] = [];
    for (let r = 0; r < options.repeats; r++) {
      const first = options.warmupSteps + r * options.stepsPerRepeat;
      const last = first + options.stepsPerRepeat - 1;
      const seconds = completions[last].seconds - completions[first - 1].seconds;
      windows.push((options.stepsPerRepeat * batchSize) / seconds);
    }
    const stepSeconds = completions.slice(options.warmupSteps).map((c, i) =>
      c.seconds - completions[options.warmupSteps + i - 1].seconds
    );
    const profiled = await stepCompletions(options, {
      workers,
      steps: options.warmupSteps + options.stepsPerRepeat,
      profile: true,
    });
    const imagesPerSec = summarize(windows);
    const base = results[0] ?? { workers, imagesPerSec };
    const speedup = imagesPerSec.median / base.imagesPerSec.median;
    const result: ScalingResult = {
      workers,
      batchSize,
      imagesPerSec,
      stepMs: summarize(stepSeconds.map((s) => s * 1000)),
      speedup,
      efficiency: speedup / (workers / base.workers),
      breakdown: breakdown(profiled.slice(options.warmupSteps).map((c) => c.timings!)),
    };
    results.push(result);
    options.onResult?.(result);
  }
  return results;
}

/** Runs `steps` training steps on `workers` workers; returns each step's completion. */
async function stepCompletions(
  options: ScalingBenchOptions,
  run: { workers: number; steps: number; profile: boolean },
): Promise<{ seconds: number; timings?: StepTiming[] }[]> {
  const batchSize = run.workers * options.perWorkerBatch;
  const count = run.steps * batchSize;
  const completions: { seconds: number; timings?: StepTiming[] }[] = [];
  await train({
    data: { train: syntheticDataset(count, { seed: 1 }), test: syntheticDataset(1) },
    workers: run.workers,
    batchSize,
    epochs: 1,
    inputSize: options.inputSize,
    width: options.width,
    backend: options.backend,
    kernels: options.kernels,
    allReduce: options.allReduce,
    profile: run.profile,
    onStep: (progress) => completions.push(progress),
  });
  return completions;
}

/** Per phase: the mean over workers of each step, then the median over steps. */
function breakdown(steps: StepTiming[][]): StepBreakdown {
  const phases = ["computeMs", "readbackMs", "allReduceMs", "waitMs", "optimizerMs"] as const;
  const result = {} as StepBreakdown;
  for (const phase of phases) {
    const means = steps.map((ranks) => ranks.reduce((sum, t) => sum + t[phase], 0) / ranks.length);
    result[phase] = summarize(means).median;
  }
  return result;
}

/** Options for {@linkcode benchPlainLoop}. */
export interface PlainLoopOptions extends BenchModel {
  /** Untimed steps first. */
  warmupSteps: number;
  /** Timed steps. */
  steps: number;
}

/**
 * The baseline for the one-worker overhead: a plain single-process tfjs
 * training loop on the same model and batch (tfjs' own SGD optimizer, no
 * workers, no gradient read-back), in this thread. Returns milliseconds per
 * step.
 *
 * @example
 * ```ts ignore
 * import { benchPlainLoop } from "./scaling_bench.ts";
 *
 * const ms = await benchPlainLoop({ inputSize: 68, width: 0.25, perWorkerBatch: 32, warmupSteps: 2, steps: 10 });
 * console.log(`${ms.median.toFixed(0)} ms per step`);
 * ```
 */
export async function benchPlainLoop(options: PlainLoopOptions): Promise<Summary> {
  await initBackend(options.backend ?? "webgpu", { kernels: options.kernels });
  const model = createNiN({ inputSize: options.inputSize, width: options.width });
  const optimizer = tf.train.sgd(0.1);
  const data = syntheticDataset(options.perWorkerBatch, { seed: 1 });
  const batch = { ...data };
  const times: number[] = [];
  try {
    for (let step = 0; step < options.warmupSteps + options.steps; step++) {
      const started = performance.now();
      const x = toModelInput(batch, { height: options.inputSize, width: options.inputSize });
      const y = tf.oneHot(tf.tensor1d(Int32Array.from(batch.labels), "int32"), 10);
      const loss = optimizer.minimize(
        () => tf.losses.softmaxCrossEntropy(y, model.apply(x, { training: true }) as tf.Tensor),
        true,
      )!;
      await loss.data(); // wait for the step, as the workers' read-back does
      tf.dispose([x, y, loss]);
      if (step >= options.warmupSteps) times.push(performance.now() - started);
    }
  } finally {
    model.dispose();
    optimizer.dispose();
  }
  return summarize(times);
}

/** One point of {@linkcode benchBatchSweep}. */
export interface BatchPoint {
  /** Images per step. */
  batch: number;
  /** Milliseconds per step. */
  ms: Summary;
}

/**
 * Step time of the plain single-process loop at several batch sizes, and the
 * least-squares line `ms ≈ fixed + perImage × batch` through the medians: the
 * fixed part is what a step costs whatever its size (kernel dispatch,
 * per-op overhead), the slope what each image adds.
 *
 * @example
 * ```ts ignore
 * import { benchBatchSweep } from "./scaling_bench.ts";
 *
 * const sweep = await benchBatchSweep({ inputSize: 67, width: 0.0625, batches: [1, 4, 16], warmupSteps: 2, steps: 5 });
 * console.log(`${sweep.fixedMs.toFixed(0)} ms per step + ${sweep.perImageMs.toFixed(1)} ms per image`);
 * ```
 */
export async function benchBatchSweep(
  options: Omit<PlainLoopOptions, "perWorkerBatch"> & { batches: readonly number[] },
): Promise<{ points: BatchPoint[]; fixedMs: number; perImageMs: number }> {
  const points: BatchPoint[] = [];
  for (const batch of options.batches) {
    points.push({ batch, ms: await benchPlainLoop({ ...options, perWorkerBatch: batch }) });
  }
  const n = points.length;
  const meanX = points.reduce((sum, p) => sum + p.batch, 0) / n;
  const meanY = points.reduce((sum, p) => sum + p.ms.median, 0) / n;
  const sxy = points.reduce((sum, p) => sum + (p.batch - meanX) * (p.ms.median - meanY), 0);
  const sxx = points.reduce((sum, p) => sum + (p.batch - meanX) ** 2, 0);
  const perImageMs = sxx === 0 ? 0 : sxy / sxx;
  return { points, fixedMs: meanY - perImageMs * meanX, perImageMs };
}
