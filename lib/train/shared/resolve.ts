/**
 * {@linkcode TrainOptions} resolved: each group validated by its own
 * resolver with the one-line errors users know (values echoed as given), the
 * preset's and the model's defaults filled in beneath the values given.
 *
 * @module
 */

import { KERNEL_SETS } from "../../kernels/mod.ts";
import { ALL_REDUCE_ALGORITHMS } from "../../collective/registry.ts";
import { mpiWorld } from "../../collective/mpi/libmpi.ts";
import { type DatasetEntry, type DatasetName, DATASETS } from "../../data/registry.ts";
import { describeValue, UsageError } from "../../errors.ts";
import {
  type ModelChoice,
  MODELS,
  type NiNModel,
  type ResNetModel,
  resolveModelConfig,
} from "../../model/registry.ts";
import { type OptimizerConfig, optimizerProblem, scheduleProblem } from "../../optim/mod.ts";
import { BACKENDS } from "./backend.ts";
import {
  type CheckpointOptions,
  type DataOptions,
  type DistributedOptions,
  MAX_WORKERS,
  type MpiProcessGroupOptions,
  PRESETS,
  type ProcessGroupOptions,
  type ResolvedCheckpoint,
  type ResolvedData,
  type ResolvedDistributed,
  type ResolvedProcessGroup,
  type ResolvedTrainOptions,
  type TrainOptions,
} from "./options.ts";

/**
 * `options` with the preset's values beneath the ones given: a built-in
 * model's training settings, then the preset, then the user's (NiN's shape
 * options merged field by field).
 */
function withDefaults(given: TrainOptions): TrainOptions {
  const preset = given.preset ?? "d2l";
  if (!Object.hasOwn(PRESETS, preset)) {
    throw new UsageError(
      `preset must be one of ${Object.keys(PRESETS).join(", ")}, got ${describeValue(preset)}`,
    );
  }
  const presetValues: TrainOptions = PRESETS[preset];
  const presetModel = (presetValues.model as { name?: string } | undefined)?.name;
  const name = given.model === undefined && presetModel !== undefined
    ? presetModel
    : modelName(given.model);
  if (presetModel !== undefined && name !== presetModel) {
    throw new UsageError(
      `the ${preset} preset is for model ${presetModel}; leave it out with another model`,
    );
  }
  const defined = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined));
  const builtIn = name !== undefined && Object.hasOwn(MODELS, name)
    ? MODELS[name as keyof typeof MODELS].training
    : {};
  const merged: TrainOptions = { ...builtIn, ...presetValues, ...defined };
  if (presetValues.model !== undefined) {
    const own = typeof given.model === "object" ? given.model as NiNModel | ResNetModel : {};
    merged.model = { ...presetValues.model as NiNModel | ResNetModel, ...own };
  }
  if (name === "resnet18") {
    // ResNet-18 takes the data's channels unless told: 1 for Fashion-MNIST, 3 for CIFAR-10.
    const model: Partial<ResNetModel> = typeof merged.model === "object"
      ? merged.model as ResNetModel
      : {};
    if (model.channels === undefined) {
      const data = merged.data;
      const named = DATASETS[(data?.dataset ?? "fashion-mnist") as DatasetName] as
        | DatasetEntry
        | undefined;
      const channels = data?.train?.channels ?? named?.channels ?? 1;
      merged.model = { ...model, name: "resnet18", channels };
    }
  }
  return merged;
}

/** The built-in model `model` names (`"nin"` when none is given), or undefined for a user's. */
function modelName(model: ModelChoice | undefined): string | undefined {
  if (model === undefined) return "nin";
  if (typeof model === "string") return model;
  const name = (model as { name?: unknown }).name;
  return typeof name === "string" && !("module" in model) && !("topology" in model)
    ? name
    : undefined;
}

/**
 * Fills in defaults and validates every option, group by group, throwing a
 * {@linkcode UsageError} with a one-line message for the first bad one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveTrainOptions } from "./resolve.ts";
 *
 * const options = resolveTrainOptions({ distributed: { workers: 4 } });
 * assert.ok(options.batchSize === 128 && options.lr === 0.1 && options.epochs === 10);
 * assert.equal(options.distributed.replicas, 4);
 * assert.throws(() => resolveTrainOptions({ distributed: { workers: 0 } }), /workers must be a positive integer, got 0/);
 * ```
 */
export function resolveTrainOptions(given: TrainOptions = {}): ResolvedTrainOptions {
  if (typeof given !== "object" || given === null) {
    throw new UsageError(`options must be an object, got ${describeValue(given)}`);
  }
  const options = withDefaults(given);
  const epochs = options.epochs ?? 10;
  const batchSize = options.batchSize ?? 128;
  const lr = options.lr ?? 0.1;
  const seed = options.seed ?? 0;
  const backend = options.backend ?? "webgpu";
  const kernels = options.kernels ?? "fast";
  positiveInteger("epochs", epochs);
  positiveInteger("batch size", batchSize);
  if (typeof lr !== "number" || !Number.isFinite(lr) || lr <= 0) {
    throw new UsageError(`learning rate must be a positive number, got ${describeValue(lr)}`);
  }
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new UsageError(`seed must be a non-negative integer, got ${describeValue(seed)}`);
  }
  oneOf("backend", backend, BACKENDS);
  oneOf("kernels", kernels, KERNEL_SETS);
  optionalType("profile", options.profile, "boolean");
  if (typeof options.stopOnSignals === "object" && options.stopOnSignals !== null) {
    optionalType("stopOnSignals.onSignal", options.stopOnSignals.onSignal, "function");
  } else optionalType("stopOnSignals", options.stopOnSignals, "boolean");
  optionalType("signal", options.signal, "object");
  for (const name of ["onStart", "onStep", "onEvaluate", "onEpoch", "onCheckpoint", "onRestart"]) {
    optionalType(name, options[name as keyof TrainOptions], "function");
  }
  const optimizer = typeof options.optimizer === "string"
    ? { name: options.optimizer }
    : options.optimizer ?? { name: "sgd" };
  const optimizerIssue = optimizerProblem(optimizer);
  if (optimizerIssue !== undefined) {
    throw new UsageError(`optimizer: ${optimizerIssue}, got ${describeValue(options.optimizer)}`);
  }
  const schedule = options.schedule ?? { name: "constant" };
  const scheduleIssue = scheduleProblem(schedule);
  if (scheduleIssue !== undefined) {
    throw new UsageError(`schedule: ${scheduleIssue}, got ${describeValue(options.schedule)}`);
  }
  return {
    model: resolveModelConfig(options.model, { seed }),
    data: resolveData(options.data),
    epochs,
    batchSize,
    lr,
    optimizer: optimizer as OptimizerConfig,
    schedule,
    seed,
    backend,
    kernels,
    profile: options.profile ?? false,
    distributed: resolveDistributed(options.distributed, batchSize),
    checkpoint: resolveCheckpoint(options.checkpoint),
  };
}

/** The `data` group, checked (the arrays themselves are checked when the run loads them). */
function resolveData(data: DataOptions | undefined): ResolvedData {
  const given = group("data", data);
  const dataset = given.dataset ?? "fashion-mnist";
  if (!Object.hasOwn(DATASETS, dataset)) {
    throw new UsageError(
      `data.dataset must be one of ${Object.keys(DATASETS).join(", ")}, got ${
        describeValue(dataset)
      }`,
    );
  }
  optionalType("data.dir", given.dir, "string");
  optionalType("data.download", given.download, "boolean");
  if ((given.train === undefined) !== (given.test === undefined)) {
    throw new UsageError("data.train and data.test go together: give both data sets, or neither");
  }
  if (given.trainLimit !== undefined) positiveInteger("data.trainLimit", given.trainLimit);
  if (given.testLimit !== undefined) positiveInteger("data.testLimit", given.testLimit);
  const normalize = given.normalize;
  if (normalize !== undefined) {
    const ok = (values: unknown, positive: boolean) =>
      Array.isArray(values) && values.length > 0 &&
      values.every((v) => typeof v === "number" && Number.isFinite(v) && (!positive || v > 0));
    if (
      typeof normalize !== "object" || normalize === null || !ok(normalize.mean, false) ||
      !ok(normalize.std, true) || normalize.mean.length !== normalize.std.length
    ) {
      throw new UsageError(
        `data.normalize must be { mean, std }: equally long arrays of numbers, std above 0; got ${
          describeValue(normalize)
        }`,
      );
    }
  }
  return {
    dataset,
    dir: given.dir,
    download: given.download ?? true,
    trainLimit: given.trainLimit,
    testLimit: given.testLimit,
    normalize: normalize && { mean: [...normalize.mean], std: [...normalize.std] },
  };
}

/**
 * The `distributed` group, checked against the global batch: every replica
 * needs at least one example, every shard too, and each replica computes
 * whole shards.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveDistributed } from "./resolve.ts";
 *
 * assert.equal(resolveDistributed({ workers: 2, shards: 4 }, 128).shardsPerReplica, 2);
 * assert.throws(() => resolveDistributed({ workers: 3, shards: 4 }, 128), /not a multiple of the 3 workers/);
 * ```
 */
export function resolveDistributed(
  distributed: DistributedOptions | undefined,
  batchSize: number,
): ResolvedDistributed {
  const given = group("distributed", distributed);
  const workers = given.workers ?? 1;
  positiveInteger("workers", workers);
  if (workers > MAX_WORKERS) {
    throw new UsageError(`workers must be at most ${MAX_WORKERS}, got ${describeValue(workers)}`);
  }
  // `allReduce: "mpi"` alone means the MPI process group.
  const processGroup = resolveProcessGroup(
    given.processGroup ?? (given.allReduce === "mpi" ? { backend: "mpi" } : undefined),
  );
  const replicas = workers * (processGroup?.size ?? 1);
  if (batchSize < replicas) {
    throw new UsageError(
      `batch size ${batchSize} is smaller than the ${replicas} workers: each worker needs at least one example per step`,
    );
  }
  const shards = given.shards;
  if (shards !== undefined) {
    positiveInteger("shards", shards);
    if (shards > MAX_WORKERS) {
      throw new UsageError(`shards must be at most ${MAX_WORKERS}, got ${describeValue(shards)}`);
    }
    if (shards > batchSize) {
      throw new UsageError(
        `shards ${shards} is larger than the batch size ${batchSize}: each shard needs at least one example per step`,
      );
    }
    if (shards % replicas !== 0) {
      throw new UsageError(
        `shards ${shards} is not a multiple of the ${replicas} workers: each worker computes whole shards`,
      );
    }
  }
  const backend = processGroup?.backend ?? "tcp";
  // A job of one MPI process averages in that process.
  const mpiAlone = given.allReduce === "mpi" && processGroup === undefined;
  const allReduce = mpiAlone ? "shared" : given.allReduce ?? (processGroup ? backend : "shared");
  oneOf("all-reduce", allReduce, ALL_REDUCE_ALGORITHMS);
  if (processGroup ? allReduce !== backend : allReduce === "tcp") {
    throw new UsageError(
      processGroup
        ? `with several processes the all-reduce is "${backend}", got ${describeValue(allReduce)}`
        : `the "tcp" all-reduce joins several processes: give processGroup (--nnodes …)`,
    );
  }
  if (backend === "mpi" && processGroup && (given.maxRestarts ?? 0) > 0) {
    throw new UsageError(
      `max restarts ${given.maxRestarts}: under MPI a failed process ends the job; restart it with --resume`,
    );
  }
  if (given.shardOptimizer !== undefined && typeof given.shardOptimizer !== "boolean") {
    throw new UsageError(
      `distributed.shardOptimizer must be true or false, got ${
        describeValue(given.shardOptimizer)
      }`,
    );
  }
  const wire = given.wire ?? "float32";
  oneOf("wire", wire, ["float32", "bf16"]);
  if (given.stepTimeout !== undefined) positiveSeconds("step timeout", given.stepTimeout);
  if (given.startupTimeout !== undefined) {
    positiveSeconds("start-up timeout", given.startupTimeout);
  }
  if (given.maxRestarts !== undefined) nonNegativeInteger("max restarts", given.maxRestarts);
  if (
    given.workerUrl !== undefined && !(given.workerUrl instanceof URL) &&
    !(typeof given.workerUrl === "string" && given.workerUrl !== "")
  ) {
    throw new UsageError(
      `distributed.workerUrl must be a URL or a non-empty string, got ${
        describeValue(given.workerUrl)
      }`,
    );
  }
  const batchShards = shards ?? replicas;
  return {
    workers,
    replicas,
    shards,
    batchShards,
    shardsPerReplica: batchShards / replicas,
    allReduce,
    shardOptimizer: (given.shardOptimizer ?? true) && allReduce === "shared" && workers > 1,
    wire,
    processGroup,
    stepTimeout: given.stepTimeout,
    startupTimeout: given.startupTimeout ?? 1800,
    maxRestarts: given.maxRestarts ?? 0,
  };
}

/** The `checkpoint` group, checked. */
function resolveCheckpoint(checkpoint: CheckpointOptions | undefined): ResolvedCheckpoint {
  const given = group("checkpoint", checkpoint);
  optionalType("checkpoint.dir", given.dir, "string");
  if (given.every !== undefined) nonNegativeInteger("checkpoint interval", given.every);
  if (given.keep !== undefined) positiveInteger("number of checkpoints to keep", given.keep);
  optionalType("checkpoint.overwrite", given.overwrite, "boolean");
  const resume = given.resume;
  if (
    resume !== undefined && typeof resume !== "boolean" && !(typeof resume === "string" && resume)
  ) {
    throw new UsageError(
      `checkpoint.resume must be true, false or a checkpoint path, got ${describeValue(resume)}`,
    );
  }
  if (resume === true && given.dir === undefined) {
    throw new UsageError("resuming from the latest checkpoint needs a checkpoint directory");
  }
  return {
    dir: given.dir,
    every: given.every ?? 0,
    keep: given.keep ?? 3,
    resume: resume === false ? undefined : resume,
    overwrite: given.overwrite ?? false,
  };
}

/** `group` checked; undefined for a job of one process. */
function resolveProcessGroup(
  group: ProcessGroupOptions | undefined,
): ResolvedProcessGroup | undefined {
  if (group === undefined) return undefined;
  if (typeof group !== "object" || group === null) {
    throw new UsageError(`processGroup must be an object, got ${describeValue(group)}`);
  }
  if (group.backend === "mpi") return resolveMpiGroup(group);
  if (group.backend !== undefined) oneOf("processGroup.backend", group.backend, ["tcp", "mpi"]);
  positiveInteger("processGroup.size", group.size);
  nonNegativeInteger("processGroup.rank", group.rank);
  if (group.rank >= group.size) {
    throw new UsageError(
      `processGroup.rank must be below processGroup.size (${group.size}), got ${
        describeValue(group.rank)
      }`,
    );
  }
  optionalType("processGroup.masterAddr", group.masterAddr, "string");
  if (group.masterAddr === undefined) throw new UsageError("processGroup.masterAddr is missing");
  nonNegativeInteger("processGroup.masterPort", group.masterPort);
  if (group.masterPort > 65535) {
    throw new UsageError(`processGroup.masterPort must be a port number, got ${group.masterPort}`);
  }
  if (group.masterPort === 0 && group.rank !== 0) {
    throw new UsageError(
      "processGroup.masterPort 0 lets rank 0 pick a free port: the other ranks need the port it reports",
    );
  }
  optionalType("processGroup.token", group.token, "string");
  optionalType("processGroup.tokenFile", group.tokenFile, "string");
  optionalType("processGroup.onNotice", group.onNotice, "function");
  optionalType("processGroup.onListening", group.onListening, "function");
  for (const name of ["peerTimeout", "joinTimeout"] as const) {
    if (group[name] !== undefined) positiveSeconds(`processGroup.${name}`, group[name]);
  }
  return group.size === 1 ? undefined : { ...group };
}

/** An MPI group: MPI initialised (once per process), its rank and size read. */
function resolveMpiGroup(group: MpiProcessGroupOptions): ResolvedProcessGroup | undefined {
  optionalType("processGroup.library", group.library, "string");
  const world = mpiWorld(group.library);
  for (const name of ["rank", "size"] as const) {
    if (group[name] !== undefined && group[name] !== world[name]) {
      throw new UsageError(
        `processGroup.${name} ${describeValue(group[name])} is not MPI's (${world[name]})`,
      );
    }
  }
  if (world.size === 1) return undefined;
  return { ...group, rank: world.rank, size: world.size, version: world.version };
}

/** A group of options: an object, or undefined for all defaults. */
function group<T extends object>(name: string, value: T | undefined): Partial<T> {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new UsageError(`${name} must be an object, got ${describeValue(value)}`);
  }
  return value;
}

/** Throws unless `value` is undefined or of `type` (a non-empty string, for strings). */
function optionalType(
  name: string,
  value: unknown,
  type: "string" | "boolean" | "function" | "object",
): void {
  if (value === undefined || (typeof value === type && value !== "" && value !== null)) return;
  const what = {
    string: "a non-empty string",
    boolean: "true or false",
    function: "a function",
    object: "an AbortSignal",
  };
  throw new UsageError(`${name} must be ${what[type]}, got ${describeValue(value)}`);
}

function oneOf<T>(name: string, value: T, values: readonly T[]): void {
  if (!values.includes(value)) {
    throw new UsageError(
      `${name} must be one of ${values.join(", ")}, got ${describeValue(value)}`,
    );
  }
}

function positiveSeconds(name: string, value: unknown): void {
  if (!(typeof value === "number" && value > 0 && Number.isFinite(value))) {
    throw new UsageError(
      `${name} must be a positive number of seconds, got ${describeValue(value)}`,
    );
  }
}

function nonNegativeInteger(name: string, value: unknown): void {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new UsageError(`${name} must be a non-negative integer, got ${describeValue(value)}`);
  }
}

function positiveInteger(name: string, value: unknown): void {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1) {
    throw new UsageError(`${name} must be a positive integer, got ${describeValue(value)}`);
  }
}

/**
 * {@linkcode TrainOptions.trace}, checked: the file and the number of steps,
 * or undefined when no trace is asked for.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveTrace } from "./resolve.ts";
 *
 * assert.deepEqual(resolveTrace("out/trace.json"), { file: "out/trace.json", steps: 5 });
 * assert.throws(() => resolveTrace({ file: "t.json", steps: 0 }), /trace steps must be an integer from 1 to 100, got 0/);
 * ```
 */
export function resolveTrace(
  trace: TrainOptions["trace"],
): { file: string; steps: number } | undefined {
  if (trace === undefined) return undefined;
  const given = typeof trace === "string" ? { file: trace } : trace;
  if (
    typeof given !== "object" || given === null || typeof given.file !== "string" ||
    given.file === ""
  ) {
    throw new UsageError(
      `trace must be a file path or { file, steps }, got ${describeValue(trace)}`,
    );
  }
  const steps = given.steps ?? 5;
  if (!Number.isInteger(steps) || steps < 1 || steps > 100) {
    throw new UsageError(
      `trace steps must be an integer from 1 to 100, got ${describeValue(steps)}`,
    );
  }
  return { file: given.file, steps };
}
