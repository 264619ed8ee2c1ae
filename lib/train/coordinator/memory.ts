/**
 * What a run will need in memory, worked out before anything is built, so
 * that a configuration the machine cannot hold is refused with one line —
 * the estimate, the limit and what to change — instead of growing until the
 * system kills it (256 workers on a 2-core machine grew to 21 GiB without one
 * step; a NiN of width 50 to 11.8 GB).
 *
 * The estimate is deliberately low (it counts what certainly is allocated),
 * so that a run it refuses could not have run:
 *
 * - every worker thread: {@linkcode WORKER_BASE_BYTES} (its isolate, tfjs and
 *   the device, measured: 1, 2, 4 and 8 LeNet workers peaked at 400, 503,
 *   762 and 1,265 MiB, about 126 MiB each), the weights on the device and in
 *   the host's copies (weights, gradient, average, optimizer slots), and the
 *   activations of one shard's forward and backward pass (for the built-in
 *   models, whose layers' sizes are known without building them);
 * - the coordinator: {@linkcode MAIN_BASE_BYTES}, the data set twice (loaded,
 *   then shared with the workers) and a few copies of the weights.
 *
 * @module
 */

import { UsageError } from "../../errors.ts";
import type { LayerSize } from "../../model/nin.ts";

/** A worker thread's own memory before its model: measured at about 126 MiB. */
export const WORKER_BASE_BYTES = 120 * 2 ** 20;

/** The coordinator's own memory before the data and the workers. */
export const MAIN_BASE_BYTES = 200 * 2 ** 20;

/** What {@linkcode estimateMemory} is told about the run. */
export interface RunShape {
  /** Worker threads in this process. */
  workers: number;
  /** Images in one shard's pass (the largest shard). */
  shardBatch: number;
  /** The model's parameters, when known before building it. */
  params: number | undefined;
  /** Its layers, when known before building it (the built-in models). */
  layers: readonly LayerSize[] | undefined;
  /** Values of one image as the model takes it (after resizing). */
  inputValues: number | undefined;
  /**
   * Float32 vectors per weight the optimizer keeps on each worker (SGD 0,
   * momentum 1, Adam 2; divided by the workers when it is sharded).
   */
  optimizerSlots: number;
  /** Bytes of the training and test examples. */
  dataBytes: number;
}

/** {@linkcode estimateMemory}'s answer. */
export interface MemoryEstimate {
  /** Bytes in all. */
  totalBytes: number;
  /** Bytes of each worker. */
  perWorkerBytes: number;
  /** Of which its activations. */
  activationBytes: number;
  /** Of which its weights, gradients and optimizer state (device and host). */
  weightBytes: number;
  /** Bytes of the coordinator. */
  mainBytes: number;
  /** The largest single tensor: its bytes and what it is. */
  largest: { bytes: number; what: string } | undefined;
}

/**
 * A low estimate of what the run needs (see the module's notes).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { estimateMemory } from "./memory.ts";
 *
 * const shape = { shardBatch: 32, params: undefined, layers: undefined, inputValues: undefined,
 *   optimizerSlots: 0, dataBytes: 0 };
 * const one = estimateMemory({ ...shape, workers: 1 });
 * const many = estimateMemory({ ...shape, workers: 256 });
 * assert.ok(many.totalBytes > 30 * 2 ** 30); // 256 threads of ~120 MiB: more than 30 GiB
 * assert.ok(one.totalBytes < 2 ** 30);
 * ```
 */
export function estimateMemory(run: RunShape): MemoryEstimate {
  const params = run.params ?? 0;
  // Device: weights, their gradient, the update; host: weights, gradient, average, slots.
  const weightBytes = params * 4 * (3 + 3 + run.optimizerSlots);
  let activationBytes = 0;
  let largest: MemoryEstimate["largest"];
  const consider = (bytes: number, what: string) => {
    if (largest === undefined || bytes > largest.bytes) largest = { bytes, what };
  };
  if (run.layers !== undefined && run.inputValues !== undefined) {
    const perImage = run.layers.reduce((sum, layer) => sum + layer.outputValues, 0);
    // Forward outputs kept for the backward pass, and as many gradients flowing back.
    activationBytes = run.shardBatch * (run.inputValues + 2 * perImage) * 4;
    consider(run.shardBatch * run.inputValues * 4, "the resized input");
    for (const layer of run.layers) {
      consider(run.shardBatch * layer.outputValues * 4, `${layer.name}'s output`);
      consider(layer.params * 4, `${layer.name}'s weights`);
    }
  }
  const perWorkerBytes = WORKER_BASE_BYTES + weightBytes + activationBytes;
  const mainBytes = MAIN_BASE_BYTES + 2 * run.dataBytes + 4 * params * 4;
  return {
    totalBytes: mainBytes + run.workers * perWorkerBytes,
    perWorkerBytes,
    activationBytes,
    weightBytes,
    mainBytes,
    largest,
  };
}

/**
 * Throws a one-line `UsageError` when `estimate` exceeds `limits`: the
 * memory available (with the number of workers that would fit), or, on a
 * hardware adapter that enforces it, the largest buffer the device takes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkMemory, estimateMemory } from "./memory.ts";
 *
 * const estimate = estimateMemory({ workers: 256, shardBatch: 1, params: undefined,
 *   layers: undefined, inputValues: undefined, optimizerSlots: 0, dataBytes: 0 });
 * assert.throws(
 *   () => checkMemory(estimate, { workers: 256, availableBytes: 24 * 2 ** 30 }),
 *   /needs at least [\d.]+ GiB \(.*\), more than the 24\.0 GiB available: at most \d+ worker\(s\) fit/,
 * );
 * ```
 */
export function checkMemory(
  estimate: MemoryEstimate,
  limits: { workers: number; availableBytes?: number; maxBufferBytes?: number },
): void {
  const largest = estimate.largest;
  if (largest && limits.maxBufferBytes !== undefined && largest.bytes > limits.maxBufferBytes) {
    throw new UsageError(
      `${largest.what} alone would take ${gib(largest.bytes)}, more than the ${
        gib(limits.maxBufferBytes)
      } a buffer may hold on this device: use a smaller batch, width or input size`,
    );
  }
  const available = limits.availableBytes;
  if (available === undefined || estimate.totalBytes <= available) return;
  const fit = Math.max(0, Math.floor((available - estimate.mainBytes) / estimate.perWorkerBytes));
  const parts = [`${limits.workers} worker(s) × ${gib(estimate.perWorkerBytes)}`];
  if (estimate.activationBytes > 0) parts.push(`activations ${gib(estimate.activationBytes)} each`);
  if (estimate.weightBytes > 0) {
    parts.push(`weights and their copies ${gib(estimate.weightBytes)} each`);
  }
  throw new UsageError(
    `this run needs at least ${gib(estimate.totalBytes)} (${parts.join("; ")}; the ` +
      `coordinator ${gib(estimate.mainBytes)}), more than the ${gib(available)} available: ` +
      (fit >= 1 && fit < limits.workers ? `at most ${fit} worker(s) fit; ` : "") +
      "use fewer workers, a smaller batch, width or input size",
  );
}

/**
 * Bytes of memory available now: `Deno.systemMemoryInfo()` (with
 * `--allow-sys=systemMemoryInfo`), else `MemAvailable` of `/proc/meminfo`
 * (which Deno reads only with `--allow-all`), else undefined (no check).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { availableMemory } from "./memory.ts";
 *
 * const bytes = availableMemory();
 * assert.ok(bytes === undefined || bytes > 0);
 * ```
 */
export function availableMemory(): number | undefined {
  const sys = Deno.permissions.querySync({ name: "sys", kind: "systemMemoryInfo" }).state;
  if (sys === "granted") return Deno.systemMemoryInfo().available;
  try {
    const kib = Deno.readTextFileSync("/proc/meminfo").match(/^MemAvailable:\s+(\d+) kB$/m)?.[1];
    return kib === undefined ? undefined : Number(kib) * 1024;
  } catch {
    return undefined;
  }
}

function gib(bytes: number): string {
  return bytes >= 2 ** 30
    ? `${(bytes / 2 ** 30).toFixed(1)} GiB`
    : `${Math.ceil(bytes / 2 ** 20)} MiB`;
}
