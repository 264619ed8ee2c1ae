/**
 * Choosing the checkpoint to resume from, and the options of a resumed run.
 *
 * @module
 */

import { acrossProcesses } from "../../collective/registry.ts";
import { DataError, UsageError } from "../../errors.ts";
import { latestCheckpoint, readCheckpoint, type TrainingState } from "../shared/checkpoint.ts";
import {
  isLayersModel,
  modelChoice,
  type ModelConfig,
  modelSizes,
  type ModelSpec,
  resolveModelConfig,
} from "../../model/registry.ts";
import type { ResolvedTrainOptions, TrainOptions } from "../shared/options.ts";
import { DistributedSampler } from "../../data/sampler.ts";

/** A checkpoint chosen to resume from. */
export interface ResumePoint {
  /** Its file. */
  path: string;
  /** What it holds. */
  state: TrainingState;
  /** Newer checkpoints passed over because they could not be used, with the reason. */
  skipped: { path: string; reason: string }[];
}

/**
 * The checkpoint `resume` asks for: a file's path, or (`true`) the newest
 * usable one in `checkpoint.dir`, passing over unusable newer ones. Resolves
 * to undefined when the directory holds no checkpoint at all (a fresh start);
 * throws a `DataError` naming the file and the reason when the named file, or
 * every file in the directory, is unusable.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { findResumePoint } from "./resume.ts";
 *
 * const dir = await Deno.makeTempDir();
 * assert.equal(await findResumePoint(true, { dir }), undefined);
 * await Deno.remove(dir);
 * ```
 */
export async function findResumePoint(
  resume: true | string,
  options: { dir?: string },
): Promise<ResumePoint | undefined> {
  if (typeof resume === "string") {
    return { path: resume, state: await readCheckpoint(resume), skipped: [] };
  }
  const dir = options.dir;
  if (dir === undefined) {
    throw new UsageError("resuming from the latest checkpoint needs a checkpoint directory");
  }
  const latest = await latestCheckpoint(dir);
  if (latest.state === undefined) {
    if (latest.skipped.length === 0) return undefined;
    throw new DataError(
      `no usable checkpoint in ${dir}: ${latest.skipped.map((s) => s.reason).join("; ")}`,
    );
  }
  return { path: latest.path!, state: latest.state, skipped: latest.skipped };
}

/** JSON of a value with object keys sorted and undefined fields left out, at every depth. */
function canonical(value: unknown): string {
  return JSON.stringify(
    value,
    (_, v) =>
      typeof v === "object" && v !== null && !Array.isArray(v)
        ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1)))
        : v,
  );
}

function describeModel(model: ModelConfig): string {
  if (model.name === "custom") return `${model.export} of ${model.module}`;
  return model.name === "layers" ? "given as a LayersModel (its topology)" : model.name;
}

/**
 * A model in a form two runs can compare: `layers` topologies with their
 * generated names (`dense_Dense3`, `sequential_2`, which count the models a
 * process has built) replaced by their order of appearance, so that the same
 * architecture built again compares equal; NiN without its shape options,
 * which are compared one by one.
 */
function comparable(model: ModelConfig): unknown {
  if (model.name === "nin") return { ...model, options: {} };
  if (model.name !== "layers") return model;
  const names = new Map<string, string>();
  const collect = (value: unknown): void => {
    if (Array.isArray(value)) value.forEach(collect);
    else if (typeof value === "object" && value !== null) {
      const fields = value as Record<string, unknown>;
      const config = fields.config as Record<string, unknown> | undefined;
      if (typeof fields.class_name === "string" && typeof config?.name === "string") {
        if (!names.has(config.name)) names.set(config.name, `#${names.size}`);
      }
      Object.values(fields).forEach(collect);
    }
  };
  collect(model.topology);
  const renamed = JSON.stringify(
    model.topology,
    (_, value) => typeof value === "string" ? names.get(value) ?? value : value,
  );
  return { ...model, topology: JSON.parse(renamed) };
}

/**
 * The model to rebuild for a checkpoint at `path` whose run recorded
 * `run.model`, given the caller's `given` (undefined: none). A checkpoint is data: the
 * code that builds a user's model (a module, a `LayersModel`'s topology) comes
 * from the caller, never from the file, whose checksum whoever edits it can
 * recompute; the file's record is only compared with it. A built-in model is
 * a name, resolved from the checkpoint alone. A module given without options
 * takes the checkpoint's (JSON handed to the caller's own code). Throws a
 * `UsageError` when a user's model is not given or differs from the record.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resumedModel } from "./resume.ts";
 *
 * const recorded = { name: "custom", module: "file:///m.ts", export: "createModel", options: { seed: 0 } };
 * const run = { model: recorded, seed: 0 };
 * assert.throws(() => resumedModel("ckpt.msgpack", run, undefined), /give the same model/);
 * const config = resumedModel("ckpt.msgpack", run, { module: "/m.ts" });
 * assert.deepEqual(config, recorded);
 * ```
 */
export function resumedModel(
  path: string,
  run: { model: ModelConfig; seed: number },
  given: TrainOptions["model"],
): ModelConfig {
  const recorded = run.model;
  const own = recorded.name === "custom" || recorded.name === "layers";
  if (own && given === undefined) {
    throw new UsageError(
      `${path} was trained with your own model (${describeModel(recorded)}): ` +
        `give the same model to resume or evaluate it (train({ model }), or --model FILE#EXPORT)`,
    );
  }
  if (given === undefined) return recorded;
  const keepOptions = recorded.name === "custom" && typeof given === "object" &&
    !isLayersModel(given) && "module" in given && given.options === undefined;
  const config = resolveModelConfig(
    keepOptions ? { ...given as ModelSpec, options: recorded.options } : given,
    { seed: run.seed },
  );
  if (canonical(comparable(config)) !== canonical(comparable(recorded))) {
    throw new UsageError(
      `${path} was trained with model ${describeModel(recorded)}, not ${describeModel(config)}: ${
        own ? "give that model" : "leave model out"
      } to resume, or start a new run`,
    );
  }
  return own ? config : recorded;
}

/**
 * The options of a run resumed from `point`: its checkpoint's settings, except
 * those that may change between runs (workers, epochs, backend, kernels,
 * all-reduce, and everything that does not affect the result). An option
 * that would change the result and differs from the checkpoint's is a
 * `UsageError`; a preset's values are defaults, not settings given.
 *
 * @example
 * ```ts ignore
 * import { findResumePoint, resumedOptions } from "./resume.ts";
 *
 * const point = await findResumePoint(true, { dir: "./ckpt" });
 * const options = point ? resumedOptions(point, { epochs: 20 }) : { epochs: 20 };
 * ```
 */
export function resumedOptions(point: ResumePoint, options: TrainOptions): TrainOptions {
  const { config } = point.state;
  const model = resumedModel(point.path, config, options.model);
  const conflict = (key: string, recorded: unknown, given: unknown) => {
    if (given === undefined || canonical(given) === canonical(recorded)) return;
    const show = (value: unknown) =>
      typeof value === "object" && value !== null ? canonical(value) : String(value ?? "(all)");
    throw new UsageError(
      `${point.path} was trained with ${key} ${show(recorded)}, not ${show(given)}: ` +
        `leave ${key} out to resume, or start a new run`,
    );
  };
  // NiN's shape options, one by one.
  if (model.name === "nin" && typeof options.model === "object") {
    for (const [key, value] of Object.entries(options.model)) {
      if (key !== "name") conflict(key, model.options[key], value);
    }
  }
  const named = (given: TrainOptions["optimizer"] | TrainOptions["schedule"]) =>
    typeof given === "string" ? { name: given } : given;
  // Checkpoints written before there was a choice used plain SGD at a constant rate.
  const optimizer = config.optimizer ?? { name: "sgd" as const };
  const schedule = config.schedule ?? { name: "constant" as const };
  const dataset = config.dataset ?? "fashion-mnist";
  conflict("batchSize", config.batchSize, options.batchSize);
  conflict("lr", config.lr, options.lr);
  conflict("seed", config.seed, options.seed);
  conflict("optimizer", optimizer, named(options.optimizer));
  conflict("schedule", schedule, named(options.schedule));
  conflict("dataset", dataset, options.data?.dataset);
  conflict("trainLimit", config.trainLimit, options.data?.trainLimit);
  conflict("testLimit", config.testLimit, options.data?.testLimit);
  conflict("normalize", config.normalize ?? {}, options.data?.normalize);
  // Shards given to the run are kept (any number of workers that divides them gives its bits).
  if (config.shards !== undefined) conflict("shards", config.shards, options.distributed?.shards);
  const given = options.distributed ?? {};
  return {
    ...options,
    preset: undefined, // the checkpoint's settings replace the preset's defaults
    model: modelChoice(model),
    epochs: options.epochs ?? config.epochs,
    batchSize: config.batchSize,
    lr: config.lr,
    seed: config.seed,
    optimizer,
    schedule,
    backend: options.backend ?? config.backend,
    kernels: options.kernels ?? config.kernels,
    data: {
      ...options.data,
      dataset,
      trainLimit: config.trainLimit,
      testLimit: config.testLimit,
      normalize: config.normalize,
    },
    distributed: {
      ...given,
      workers: given.workers ?? config.workers,
      shards: config.shards ?? given.shards,
      wire: given.wire ?? config.wire, // the caller may change it; the checkpoint's otherwise
      // The all-reduce follows the job's shape: "tcp" or "mpi" across processes only.
      allReduce: given.allReduce ??
        (given.processGroup || acrossProcesses(config.allReduce) ? undefined : config.allReduce),
    },
  };
}

/**
 * Throws unless `point` can continue on this data and these shards: a
 * checkpoint taken within an epoch needs the same global batches, i.e. the
 * same padded epoch (a `UsageError` says how to resume instead), and a step
 * the epoch has (a `DataError` otherwise).
 *
 * @example
 * ```ts ignore
 * checkResumable(point, { count: trainSet.count, steps, options: resolved });
 * ```
 */
export function checkResumable(
  point: ResumePoint,
  run: { count: number; steps: number; options: ResolvedTrainOptions },
): void {
  const { state } = point;
  if (state.stepsDone >= run.steps) {
    throw new DataError(
      `${point.path} stopped after step ${state.stepsDone} of an epoch that has ${run.steps}: ` +
        "it does not belong to this data set",
    );
  }
  // A built-in's size is known without building it: a checkpoint whose weights do not fit its
  // recorded shape (say, width 50: 11 GB of weights) is refused before anything is built.
  const sizes = modelSizes(run.options.model);
  if (sizes !== undefined && sizes.params !== state.weights.length) {
    throw new DataError(
      `${point.path} holds ${state.weights.length} weights, but ${run.options.model.name} as it ` +
        `records it has ${sizes.params}: it is not a checkpoint of that model`,
    );
  }
  const most = state.epochsDone * run.steps * run.options.batchSize;
  if (state.totals.examples > most) {
    throw new DataError(
      `${point.path} counts ${state.totals.examples} training examples in ${state.epochsDone} ` +
        `epoch(s) of at most ${most}: it does not belong to this data set`,
    );
  }
  // A checkpoint's own shards are kept on resume; without them a batch had one per replica.
  const { config } = state;
  const before = config.shards ?? config.workers * (config.processes ?? 1);
  const now = run.options.distributed.batchShards;
  if (state.stepsDone === 0 || before === now) return;
  if (paddedSize(run.count, before) !== paddedSize(run.count, now)) {
    throw new UsageError(
      `${point.path} stopped within an epoch with ${before} workers; with ` +
        `${now} the epoch's batches differ: resume with ${before} ` +
        `workers in all, or from a checkpoint taken at the end of an epoch`,
    );
  }
}

/**
 * Length of the padded order that `DistributedSampler` deals out to `shards` shards.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { paddedSize } from "./resume.ts";
 *
 * assert.equal(paddedSize(10, 4), 12);
 * ```
 */
export function paddedSize(count: number, shards: number): number {
  return new DistributedSampler(count, { rank: 0, worldSize: shards }).totalSize;
}
