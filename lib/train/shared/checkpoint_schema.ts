/**
 * The shape a decoded checkpoint payload must have before anything uses it.
 *
 * A checkpoint's checksum proves the bytes are the ones written, not that the
 * writer wrote something sensible (another program, another version, a hand-
 * edited file with a fresh checksum). Every field is checked here, with the
 * same rules the options of a run get.
 *
 * @module
 */

import { acrossProcesses } from "../../collective/registry.ts";
import { UsageError } from "../../errors.ts";
import { createOptimizer, type OptimizerConfig } from "../../optim/mod.ts";
import { stateProblem } from "../../optim/optimizer.ts";
import { modelChoice, type ModelConfig, modelSizes } from "../../model/registry.ts";
import type { ResolvedTrainOptions, TrainOptions } from "./options.ts";
import { resolveTrainOptions } from "./resolve.ts";
import type { RunConfig } from "./checkpoint.ts";

type Fields = Record<string, unknown>;

/**
 * The first problem with `state`, a decoded checkpoint payload whose weights
 * are already a `Float32Array`, or undefined when it is a valid training
 * state: run id, settings (as `train()` would accept them), position,
 * finite weights, optimizer, RNG, history and sums.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkpointProblem } from "./checkpoint_schema.ts";
 *
 * assert.equal(checkpointProblem({ epochsDone: 1 }), "config is missing or not an object");
 * ```
 */
export function checkpointProblem(state: Fields): string | undefined {
  if (state.runId !== undefined && typeof state.runId !== "string") return "runId is not a string";
  const config = state.config as Fields | undefined;
  if (!isObject(config)) return "config is missing or not an object";
  const model = config.model as Fields | undefined;
  if (!isObject(model) || typeof model.name !== "string" || !isObject(model.options)) {
    return "config.model is missing or not a model";
  }
  try {
    resolveTrainOptions(runOptions(config as unknown as RunConfig));
  } catch (error) {
    if (error instanceof UsageError) return `config: ${error.message}`;
    throw error;
  }
  // A built-in's options record the run's seed; a user's model takes its own (or none).
  const builtIn = model.name !== "custom" && model.name !== "layers";
  if (builtIn && (model.options as Fields).seed !== config.seed) {
    return "config.model.options.seed differs from config.seed";
  }
  if (
    config.processes !== undefined &&
    !(isCount(config.processes) && (config.processes as number) >= 1)
  ) {
    return `config.processes ${config.processes} is not a number of processes`;
  }
  const epochs = config.epochs as number;
  if (!isCount(state.epochsDone) || (state.epochsDone as number) > epochs) {
    return `epochsDone ${state.epochsDone} is not a count of at most ${epochs}`;
  }
  if (!isCount(state.stepsDone)) return `stepsDone ${state.stepsDone} is not a count`;
  const weights = state.weights as Float32Array;
  if (weights.length === 0) return "the weights are empty";
  if (!weights.every(Number.isFinite)) return "the weights are not all finite";
  if (typeof state.weightsChecksum !== "string" || !/^[0-9a-f]{64}$/.test(state.weightsChecksum)) {
    return "weightsChecksum is not a SHA-256";
  }
  const optimizer = state.optimizer as Fields | undefined;
  const name = (config.optimizer as Fields | undefined)?.name ?? "sgd";
  if (!isObject(optimizer) || optimizer.name !== name || optimizer.lr !== config.lr) {
    return `optimizer is not ${name} at the run's learning rate`;
  }
  if (optimizer.state !== undefined) {
    const optimizerState = optimizer.state as Fields;
    const slots = isObject(optimizerState) ? optimizerState.slots : undefined;
    if (!isObject(slots)) return "optimizer state has no slots";
    const optimizerConfig = (config.optimizer ?? { name: "sgd" }) as OptimizerConfig;
    const names = Object.keys(createOptimizer(optimizerConfig, { size: 0 }).state().slots);
    // It covers the trainable weights, which come first: all but a built-in's
    // statistics; a user's model's count is its own to say (checked against
    // the model when the run starts).
    const first = Object.values(slots)[0] as Float32Array | undefined;
    const sizes = modelSizes(model as unknown as ModelConfig);
    const size = sizes !== undefined
      ? weights.length - (sizes.params - sizes.trainable)
      : first instanceof Float32Array && first.length <= weights.length
      ? first.length
      : weights.length;
    const problem = stateProblem(optimizerState as never, { names, size });
    if (problem !== undefined) return problem;
    const bad = names.find((slot) => !(slots[slot] as Float32Array).every(Number.isFinite));
    if (bad !== undefined) return `optimizer slot ${bad} is not all finite`;
  }
  if (!isObject(state.rng) || (state.rng as Fields).seed !== config.seed) {
    return "rng is not the run's seed";
  }
  const history = state.history;
  if (!Array.isArray(history) || history.length !== state.epochsDone) {
    return `history does not hold one record per epoch done (${state.epochsDone})`;
  }
  // Every figure within what a run could have produced: a hand-edited file with fresh
  // checksums must not make a resumed run report a train accuracy of −1000.
  for (const [i, record] of history.entries()) {
    if (
      !isObject(record) || record.epoch !== i + 1 ||
      !nonNegative(record, ["loss", "examplesPerSec", "seconds"]) ||
      !fractions(record, ["trainAcc", "testAcc"])
    ) {
      return `history record ${i + 1} is malformed or out of range`;
    }
  }
  const partial = state.partial as Fields;
  if (!isObject(partial) || !nonNegative(partial, ["lossSum", "trainSeconds", "seconds"])) {
    return "partial is not the sums of an epoch in progress";
  }
  const seen = (state.stepsDone as number) * (config.batchSize as number);
  if (!isCount(partial.count) || (partial.count as number) > seen) {
    return `partial.count ${partial.count} is not a count of at most the ${seen} examples of ` +
      `${state.stepsDone} step(s)`;
  }
  if (!isCount(partial.correct) || (partial.correct as number) > (partial.count as number)) {
    return `partial.correct ${partial.correct} is not a count of at most partial.count`;
  }
  const totals = state.totals as Fields;
  if (!isObject(totals) || !isCount(totals.examples) || !nonNegative(totals, ["trainSeconds"])) {
    return "totals are malformed or out of range";
  }
  if (state.epochsDone === 0 && totals.examples !== 0) {
    return "totals.examples is not 0 before the first epoch ended";
  }
  return undefined;
}

function isObject(value: unknown): value is Fields {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): boolean {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** Whether every key of `keys` in `fields` is a finite number ≥ 0. */
function nonNegative(fields: Fields, keys: readonly string[]): boolean {
  return keys.every((key) => {
    const value = fields[key];
    return typeof value === "number" && Number.isFinite(value) && value >= 0;
  });
}

/** Whether every key of `keys` in `fields` is a number in [0, 1]. */
function fractions(fields: Fields, keys: readonly string[]): boolean {
  return keys.every((key) => {
    const value = fields[key];
    return typeof value === "number" && value >= 0 && value <= 1;
  });
}

/**
 * The options that run `config` again, a checkpoint's record of a run (the
 * all-reduce left to the job's shape: `"tcp"` and `"mpi"` need a process
 * group, which is the launcher's business, not the checkpoint's).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { runOptions } from "./checkpoint_schema.ts";
 *
 * const options = runOptions({
 *   workers: 2, epochs: 3, batchSize: 64, lr: 0.1, seed: 0, backend: "cpu", allReduce: "tcp",
 *   model: { name: "lenet", options: { seed: 0 } }, trainLimit: 640, testLimit: undefined,
 * });
 * assert.deepEqual(options.model, { name: "lenet" });
 * assert.equal(options.distributed?.allReduce, undefined);
 * ```
 */
export function runOptions(config: RunConfig): TrainOptions {
  const orNone = <T>(value: T | null | undefined) => value ?? undefined;
  return {
    model: modelChoice(config.model),
    data: {
      dataset: orNone(config.dataset),
      trainLimit: orNone(config.trainLimit),
      testLimit: orNone(config.testLimit),
      normalize: orNone(config.normalize),
    },
    epochs: config.epochs,
    batchSize: config.batchSize,
    lr: config.lr,
    seed: config.seed,
    backend: config.backend,
    kernels: config.kernels,
    optimizer: config.optimizer,
    schedule: config.schedule,
    distributed: {
      workers: config.workers,
      shards: orNone(config.shards),
      allReduce: acrossProcesses(config.allReduce) ? undefined : config.allReduce,
      wire: orNone(config.wire),
    },
  };
}

/**
 * What a checkpoint records of a run's resolved options (the inverse of
 * {@linkcode runOptions}, within what a resumed run may change).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { runConfig, runOptions } from "./checkpoint_schema.ts";
 * import { resolveTrainOptions } from "./resolve.ts";
 *
 * const config = runConfig(resolveTrainOptions({ model: "lenet", distributed: { workers: 2 } }));
 * assert.equal(config.batchSize, 256);
 * assert.deepEqual(resolveTrainOptions(runOptions(config)).model, { name: "lenet", options: { seed: 0 } });
 * ```
 */
export function runConfig(options: ResolvedTrainOptions): RunConfig {
  const { distributed, data } = options;
  return {
    workers: distributed.workers,
    processes: distributed.processGroup?.size,
    epochs: options.epochs,
    batchSize: options.batchSize,
    shards: distributed.shards,
    wire: distributed.wire === "bf16" ? "bf16" : undefined, // absent: float32
    lr: options.lr,
    optimizer: options.optimizer,
    schedule: options.schedule,
    seed: options.seed,
    backend: options.backend,
    allReduce: distributed.allReduce,
    kernels: options.kernels,
    model: options.model,
    dataset: data.dataset,
    normalize: data.normalize,
    trainLimit: data.trainLimit,
    testLimit: data.testLimit,
  };
}
