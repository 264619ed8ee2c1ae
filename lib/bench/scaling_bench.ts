/**
 * Scaling benchmark: training throughput with 1, 2, 4 … workers on the real
 * training path (`train()`), each worker taking the same number of images
 * per step, and where each step's time goes; plus the overhead of one worker
 * against a plain single-process tfjs loop, the two taking turns.
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
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
    model: { name: "nin", inputSize: options.inputSize, width: options.width },
    distributed: { workers: run.workers, allReduce: options.allReduce },
    batchSize,
    epochs: 1,
    backend: options.backend,
    kernels: options.kernels,
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
 * A plain single-process tfjs training loop on the same model and batch as
 * the workers (tfjs' own SGD optimizer, no workers, no gradient read-back),
 * in this thread: the baseline for the one-worker overhead.
 */
class PlainLoop {
  readonly #inputSize: number;
  readonly #model: ReturnType<typeof createNiN>;
  readonly #optimizer = tf.train.sgd(0.1);
  readonly #batch;

  private constructor(options: BenchModel) {
    this.#inputSize = options.inputSize;
    this.#model = createNiN({ inputSize: options.inputSize, width: options.width });
    this.#batch = { ...syntheticDataset(options.perWorkerBatch, { seed: 1 }) };
  }

  static async create(options: BenchModel): Promise<PlainLoop> {
    await initBackend(options.backend ?? "webgpu", { kernels: options.kernels });
    return new PlainLoop(options);
  }

  /** Runs `steps` steps; resolves with each one's milliseconds. */
  async run(steps: number): Promise<number[]> {
    const times: number[] = [];
    const size = { height: this.#inputSize, width: this.#inputSize };
    for (let step = 0; step < steps; step++) {
      const started = performance.now();
      const x = toModelInput(this.#batch, size);
      const y = tf.oneHot(tf.tensor1d(Int32Array.from(this.#batch.labels), "int32"), 10);
      const loss = this.#optimizer.minimize(
        () =>
          tf.losses.softmaxCrossEntropy(y, this.#model.apply(x, { training: true }) as tf.Tensor),
        true,
      )!;
      await loss.data(); // wait for the step, as the workers' read-back does
      tf.dispose([x, y, loss]);
      times.push(performance.now() - started);
    }
    return times;
  }

  dispose(): void {
    this.#model.dispose();
    this.#optimizer.dispose();
  }
}

/**
 * The plain loop of {@linkcode benchOverhead} alone, for `options.steps`
 * timed steps after `options.warmupSteps`. Returns milliseconds per step.
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
  const loop = await PlainLoop.create(options);
  try {
    await loop.run(options.warmupSteps);
    return summarize(await loop.run(options.steps));
  } finally {
    loop.dispose();
  }
}

/** Options for {@linkcode benchOverhead}. */
export interface OverheadBenchOptions extends BenchModel {
  /** Untimed steps first, in every round. */
  warmupSteps: number;
  /** Timed steps per round, on each side. */
  stepsPerRepeat: number;
  /** Rounds. */
  repeats: number;
}

/** What {@linkcode benchOverhead} measured. */
export interface OverheadResult {
  /** Milliseconds per step of `train()` with one worker. */
  workerStepMs: Summary;
  /** Milliseconds per step of the plain loop in this thread. */
  plainStepMs: Summary;
  /** `workerStepMs.median / plainStepMs.median`. */
  ratio: number;
}

/**
 * The cost of training through one worker (`train()` with `workers: 1`)
 * against a plain tfjs loop in this thread, on the same model and batch.
 * The two take turns, `options.repeats` rounds of `options.stepsPerRepeat`
 * timed steps each, so that both see the machine in the same state; the
 * ratio is that of the medians over all timed steps.
 *
 * @example
 * ```ts ignore
 * import { benchOverhead } from "./scaling_bench.ts";
 *
 * const { ratio } = await benchOverhead({
 *   inputSize: 68,
 *   width: 0.25,
 *   perWorkerBatch: 32,
 *   warmupSteps: 2,
 *   stepsPerRepeat: 5,
 *   repeats: 3,
 * });
 * console.log(`one worker: ${((ratio - 1) * 100).toFixed(1)}% over a plain loop`);
 * ```
 */
export async function benchOverhead(options: OverheadBenchOptions): Promise<OverheadResult> {
  const loop = await PlainLoop.create(options);
  const worker: number[] = [];
  const plain: number[] = [];
  try {
    await loop.run(options.warmupSteps);
    for (let round = 0; round < options.repeats; round++) {
      const completions = await stepCompletions(
        { ...options, workers: [1] },
        { workers: 1, steps: options.warmupSteps + options.stepsPerRepeat, profile: false },
      );
      for (let i = options.warmupSteps; i < completions.length; i++) {
        worker.push((completions[i].seconds - completions[i - 1].seconds) * 1000);
      }
      plain.push(...await loop.run(options.stepsPerRepeat));
    }
  } finally {
    loop.dispose();
  }
  const workerStepMs = summarize(worker);
  const plainStepMs = summarize(plain);
  return { workerStepMs, plainStepMs, ratio: workerStepMs.median / plainStepMs.median };
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
