/**
 * Options of {@linkcode train}, their defaults (d2l §7.3's configuration) and
 * their validation, shared by the library and the command line.
 *
 * @module
 */

import { KERNEL_SETS, type KernelSet } from "../../kernels/mod.ts";
import { ALL_REDUCE_ALGORITHMS, type AllReduceAlgorithm } from "../../collective/registry.ts";
import type { Dataset } from "../../data/dataset.ts";
import { type DatasetName, DATASETS } from "../../data/registry.ts";
import { describeValue, UsageError } from "../../errors.ts";
import type { HeadInit, KernelInit } from "../../model/nin.ts";
import {
  type LayersModelLike,
  type ModelConfig,
  type ModelName,
  MODELS,
  type ModelSpec,
  resolveModelConfig,
} from "../../model/registry.ts";
import type { Normalization } from "../../data/dataset.ts";
import {
  type LrSchedule,
  type OptimizerConfig,
  type OptimizerName,
  optimizerProblem,
  scheduleProblem,
} from "../../optim/mod.ts";
import { type BackendName, BACKENDS, type DeviceInfo } from "./backend.ts";
import type { StepTiming } from "./protocol.ts";

/**
 * The most workers one process starts: each is a thread with its own
 * device and a copy of the model.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MAX_WORKERS, resolveTrainOptions } from "./options.ts";
 *
 * assert.throws(() => resolveTrainOptions({ workers: MAX_WORKERS + 1 }), /at most 256/);
 * ```
 */
export const MAX_WORKERS = 256;

/** The named sets of defaults {@linkcode TrainOptions.preset} selects. */
export type PresetName = "d2l" | "quick";

/**
 * Named defaults: `d2l` (d2l.ai's configuration: the built-in defaults) and
 * `quick` (a NiN small enough to learn Fashion-MNIST in minutes on a 2-core
 * CPU machine: 99 px — the smallest input whose last block sees 2×2 pixels —
 * ⅛ width, no dropout, the whole training set for 3 epochs at batch 128, lr
 * 0.1, and a class-score layer that starts at zero so that no class starts
 * without gradient; see the README's quick-preset example for why). Options given
 * explicitly override a preset's values; a resumed run takes its settings
 * from the checkpoint, whatever the preset says.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PRESETS, resolveTrainOptions } from "./options.ts";
 *
 * assert.equal(PRESETS.quick.inputSize, 99);
 * assert.equal(resolveTrainOptions({ preset: "quick", batchSize: 16 }).batchSize, 16);
 * ```
 */
export const PRESETS: Readonly<Record<PresetName, Readonly<TrainOptions>>> = Object.freeze({
  d2l: Object.freeze({}),
  quick: Object.freeze({
    inputSize: 99,
    width: 0.125,
    dropout: 0,
    head: "zero",
    epochs: 3,
    batchSize: 128,
  }),
});

/** Options of {@linkcode train}. Every field is optional; defaults are d2l's. */
export interface TrainOptions {
  /**
   * Defaults to start from: `"d2l"` (the default) or `"quick"`; see
   * {@linkcode PRESETS}. Options given here override them.
   */
  preset?: PresetName;
  /** Number of data-parallel worker replicas. Default 1. */
  workers?: number;
  /** Passes over the training set. Default 10. */
  epochs?: number;
  /** Global batch size, split across the workers. Default 128. */
  batchSize?: number;
  /**
   * Cut every global batch into this many equal shards (default: one per
   * worker, over all processes). Each worker computes the gradients of whole
   * shards, one after the other, and every shard's gradient is its own term
   * of the average, in shard order. So runs with the same `shards` give
   * bit-identical weights with any number of workers that divides it (1, 2
   * or 4 workers with `shards: 4`), and a worker holding several shards needs
   * the memory of one shard's pass only. At most 256, at most the batch size.
   */
  shards?: number;
  /** Base learning rate. Default 0.1 (d2l's). */
  lr?: number;
  /**
   * The optimizer: a name (`"sgd"`, the default, or `"adam"`) or a name with
   * hyper-parameters, e.g. `{ name: "sgd", momentum: 0.9, nesterov: true,
   * weightDecay: 5e-4 }` (see `OptimizerConfig`).
   */
  optimizer?: OptimizerName | OptimizerConfig;
  /**
   * The learning rate of each step, e.g. `{ name: "cosine", warmupEpochs: 1 }`
   * (see `LrSchedule`). Default constant.
   */
  schedule?: LrSchedule;
  /** Seed of the weight initialisation, the shuffle and dropout. Default 0. */
  seed?: number;
  /** TensorFlow.js backend in every worker. Default `"webgpu"`. */
  backend?: BackendName;
  /**
   * How gradients are averaged: `"shared"` (default in one process) or
   * `"star"`; `"tcp"` (the default, and the only choice, with
   * `processGroup`): through this process's coordinator, then across the
   * processes over TCP.
   */
  allReduce?: AllReduceAlgorithm;
  /**
   * This process's place in a job of several processes (one per host, or per
   * GPU), each running `workers` replicas: `workers × size` replicas in all,
   * identical weights on every one. Read it from the launcher's environment
   * with `launchInfo`. Every process must be given the same options; only
   * rank 0 writes checkpoints.
   */
  processGroup?: ProcessGroupOptions;
  /**
   * The WebGPU kernels: `"fast"` (default; this library's convolution
   * kernels, tfjs's for everything else) or `"tfjs"` (tfjs's own only).
   */
  kernels?: KernelSet;
  /**
   * Time the phases of every step on every worker, reported in
   * {@linkcode StepProgress.timings}. Adds two device synchronisations per step.
   */
  profile?: boolean;
  /**
   * The model: `"nin"` (the default, d2l §7.3), `"lenet"` (d2l §7.6, trained
   * at lr 0.9 and batch 256 unless told otherwise), or your own: a tfjs
   * `LayersModel` you built (its topology and current weights go to every
   * worker), or a module and the function it exports (see `ModelSpec`).
   * The options `inputSize` … `head` below are NiN's.
   */
  model?: ModelName | ModelSpec | LayersModelLike | { topology: unknown };
  /** NiN: side of the square model input; images are resized to it. Default 224. */
  inputSize?: number;
  /** NiN: channel-width multiplier of the first three blocks. Default 1. */
  width?: number;
  /** NiN: dropout rate before the last block. Default 0.5. */
  dropout?: number;
  /** NiN: kernel initialisation. Default `"he-normal"`. */
  init?: KernelInit;
  /**
   * NiN: the class-score layer's initialisation, `"random"` (default) or
   * `"zero"` (zero weights, equal positive scores: every class learns from the
   * first step; the quick preset's choice).
   */
  head?: HeadInit;
  /**
   * Per-channel normalisation of the input, after bytes are scaled to [0, 1]:
   * `(x − mean) / std`. Default none (d2l's `ToTensor` only).
   */
  normalize?: Normalization;
  /**
   * The data set to load when `data` is not given: a key of `DATASETS`.
   * Default `"fashion-mnist"`.
   */
  dataset?: DatasetName;
  /** Directory with the data set's files (for Fashion-MNIST, see `loadFashionMNIST`). */
  dataDir?: string;
  /** Download the data set when no copy is found. Default true. */
  download?: boolean;
  /** Data already in memory; `dataDir` and `download` are then ignored. */
  data?: { train: Dataset; test: Dataset };
  /** Train on the first `trainLimit` training examples only. */
  trainLimit?: number;
  /** Evaluate on the first `testLimit` test examples only. */
  testLimit?: number;
  /**
   * Module each worker runs, in a `node:worker_threads` thread. Default: the
   * library's `workers/replica_worker.ts`. A replacement must serve the same
   * protocol, normally by calling `serveReplica(parentChannel())` (e.g. after
   * registering extra tfjs kernels).
   */
  workerUrl?: URL | string;
  /**
   * Seconds without progress after which the run stops with an error naming
   * the worker the others wait for. Default: adaptive — 30 minutes until the
   * first step completes (shader compilation), then 20 × the slowest step so
   * far, at least 5 minutes.
   */
  stepTimeout?: number;
  /** Directory for checkpoints; without it nothing is written to disk. */
  checkpointDir?: string;
  /** Also checkpoint every this many steps within an epoch (0: only after each epoch). Default 0. */
  checkpointEvery?: number;
  /**
   * Start a fresh run in a `checkpointDir` that holds other checkpoints
   * (another run's, or files named like checkpoints): they are deleted once
   * this run's first checkpoint is written. Default false: such a directory
   * is refused before any work is done.
   */
  overwrite?: boolean;
  /** Checkpoints kept in `checkpointDir`, newest first. Default 3. */
  keep?: number;
  /**
   * Continue from a checkpoint: `true` for the newest usable one in
   * `checkpointDir` (a fresh start when there is none), or a file's path.
   * The run then keeps the checkpoint's settings; options that would change
   * its results (model, batch size, learning rate, seed, data limits) must
   * match them or be left out. The same number of workers gives bit-identical
   * weights to an uninterrupted run.
   */
  resume?: boolean | string;
  /**
   * After a worker fails or stalls, restart all workers from the last
   * checkpoint (on disk or, without `checkpointDir`, kept in memory) at most
   * this many times. Default 0.
   */
  maxRestarts?: number;
  /**
   * Aborting stops training at the next step boundary on every worker; with
   * `checkpointDir` a checkpoint is written first. `train()` then rejects with
   * an `InterruptedError`.
   */
  signal?: AbortSignal;
  /** Called once the workers are ready, before the first step. */
  onStart?: (info: TrainStart) => void;
  /** Called after every global step. */
  onStep?: (progress: StepProgress) => void;
  /** Called as the test set is evaluated after an epoch (examples done of all, over all workers). */
  onEvaluate?: (progress: { epoch: number; done: number; total: number }) => void;
  /** Called after every epoch with its metrics; training waits for a returned promise. */
  onEpoch?: (record: EpochRecord) => void | Promise<void>;
  /** Called after each checkpoint is written, with its path. */
  onCheckpoint?: (path: string) => void;
  /** Called when the workers are restarted after a failure. */
  onRestart?: (info: { restart: number; maxRestarts: number; error: Error; from: string }) => void;
}

/** Where this process stands in a multi-process job, and how it joins the others. */
export interface ProcessGroupOptions {
  /** This process's rank, from 0. */
  rank: number;
  /** Number of processes. */
  size: number;
  /** Rank 0's host: rank 0 listens there (e.g. `"127.0.0.1"` for one machine). */
  masterAddr: string;
  /** Rank 0's port. */
  masterPort: number;
  /** The shared secret, at least 16 characters (or `tokenFile`). */
  token?: string;
  /** A file holding the shared secret. */
  tokenFile?: string;
  /** Seconds of silence after which a peer is presumed dead. Default 60. */
  peerTimeout?: number;
  /** Seconds to wait for every process to join. Default 600. */
  joinTimeout?: number;
  /** Rank 0: told, one line each, about connections it refused while waiting. */
  onNotice?: (line: string) => void;
}

/** The options with every default filled in and every value checked. */
export interface ResolvedTrainOptions {
  /** Number of worker replicas in this process. */
  workers: number;
  /** Number of replicas in the job: `workers` × processes. */
  replicas: number;
  /** The processes of the job, when there are several. */
  processGroup: ProcessGroupOptions | undefined;
  /** Number of epochs. */
  epochs: number;
  /** Global batch size. */
  batchSize: number;
  /** Shards per global batch as given; undefined: one per replica. Recorded in checkpoints. */
  shards: number | undefined;
  /** Shards per global batch: `shards`, or one per replica. A multiple of `replicas`. */
  batchShards: number;
  /** Shards each replica computes per step: `batchShards / replicas`. */
  shardsPerReplica: number;
  /** Base learning rate. */
  lr: number;
  /** Optimizer and its hyper-parameters. */
  optimizer: OptimizerConfig;
  /** Learning-rate schedule. */
  schedule: LrSchedule;
  /** Seed. */
  seed: number;
  /** Backend. */
  backend: BackendName;
  /** All-reduce algorithm. */
  allReduce: AllReduceAlgorithm;
  /** WebGPU kernel set. */
  kernels: KernelSet;
  /** Whether steps are profiled. */
  profile: boolean;
  /** Step timeout in seconds, or undefined for the adaptive default. */
  stepTimeout: number | undefined;
  /** Checkpoint directory, if any. */
  checkpointDir: string | undefined;
  /** Steps between checkpoints within an epoch (0: only after each epoch). */
  checkpointEvery: number;
  /** Checkpoints kept. */
  keep: number;
  /** Restarts allowed after a worker failure. */
  maxRestarts: number;
  /** The model, its options resolved, seed included. */
  model: ModelConfig;
  /** Input normalisation, if any. */
  normalize: Normalization | undefined;
  /** The data set loaded when none is given in memory. */
  dataset: DatasetName;
  /** Number of training examples used, or undefined for all. */
  trainLimit: number | undefined;
  /** Number of test examples used, or undefined for all. */
  testLimit: number | undefined;
}

/** What {@linkcode TrainOptions.onStart} is told. */
export interface TrainStart {
  /** The device of worker 0 (all workers use the same backend). */
  device: DeviceInfo;
  /** The resolved configuration. */
  options: ResolvedTrainOptions;
  /** Number of model parameters. */
  numParams: number;
  /** The model's input: `[height, width, channels]`. */
  inputShape: readonly [number, number, number];
  /** Global steps per epoch. */
  stepsPerEpoch: number;
  /** Training examples used. */
  trainCount: number;
  /** Test examples used. */
  testCount: number;
  /** Seconds spent loading data and starting the workers. */
  startupSeconds: number;
  /** Set when the run continues from a checkpoint. */
  resumedFrom?: {
    /** The checkpoint file. */
    path: string;
    /** Epochs it had completed. */
    epochsDone: number;
    /** Steps it had completed in the next epoch. */
    stepsDone: number;
    /** Newer checkpoints passed over as unusable, with the reason. */
    skipped: { path: string; reason: string }[];
    /** The epochs it had completed. */
    history: EpochRecord[];
  };
  /**
   * `LP_NUM_THREADS` (llvmpipe's threads per device) as the workers saw it:
   * the user's value, or the coordinator's share of the cores per worker;
   * undefined when it could not be set (no `--allow-env`).
   */
  rendererThreads: string | undefined;
}

/** What {@linkcode TrainOptions.onStep} is told after each global step. */
export interface StepProgress {
  /** Epoch, from 1. */
  epoch: number;
  /** Steps done in this epoch, from 1. */
  step: number;
  /** Steps in this epoch. */
  steps: number;
  /** Mean training loss over the epoch so far. */
  loss: number;
  /** Training accuracy over the epoch so far. */
  trainAcc: number;
  /** Seconds since the epoch started. */
  seconds: number;
  /** With `profile`: where this step spent its time on each worker (index = rank). */
  timings?: StepTiming[];
}

/** Metrics of one epoch, as d2l prints them. */
export interface EpochRecord {
  /** Epoch, from 1. */
  epoch: number;
  /** Mean training cross-entropy over the epoch's examples (with dropout, as trained). */
  loss: number;
  /** Training accuracy over the epoch's examples (with dropout, as trained). */
  trainAcc: number;
  /** Accuracy on the test set after the epoch (no dropout). */
  testAcc: number;
  /** Training examples per second over the epoch's steps (evaluation excluded). */
  examplesPerSec: number;
  /** Wall-clock seconds of the epoch, evaluation included. */
  seconds: number;
}

/**
 * Fills in defaults and validates every option, throwing a
 * {@linkcode UsageError} with a one-line message for the first bad one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveTrainOptions } from "./options.ts";
 *
 * const options = resolveTrainOptions({ workers: 4 });
 * assert.ok(options.batchSize === 128 && options.lr === 0.1 && options.epochs === 10);
 * ```
 */
export function resolveTrainOptions(given: TrainOptions = {}): ResolvedTrainOptions {
  const preset = given.preset ?? "d2l";
  if (!Object.hasOwn(PRESETS, preset)) {
    throw new UsageError(
      `preset must be one of ${Object.keys(PRESETS).join(", ")}, got ${describeValue(preset)}`,
    );
  }
  const defined = Object.entries(given).filter(([, value]) => value !== undefined);
  const builtIn = typeof given.model === "string" && Object.hasOwn(MODELS, given.model)
    ? MODELS[given.model]
    : undefined;
  if (given.model !== undefined && given.model !== "nin" && preset !== "d2l") {
    throw new UsageError(`the ${preset} preset is NiN's; leave it out with another model`);
  }
  const options: TrainOptions = {
    ...builtIn?.training,
    ...PRESETS[preset],
    ...Object.fromEntries(defined),
  };
  const workers = options.workers ?? 1;
  const epochs = options.epochs ?? 10;
  const batchSize = options.batchSize ?? 128;
  const lr = options.lr ?? 0.1;
  const seed = options.seed ?? 0;
  const backend = options.backend ?? "webgpu";
  const processGroup = resolveProcessGroup(options.processGroup);
  const allReduce = options.allReduce ?? (processGroup ? "tcp" : "shared");
  const kernels = options.kernels ?? "fast";
  positiveInteger("workers", workers);
  if (workers > MAX_WORKERS) {
    throw new UsageError(`workers must be at most ${MAX_WORKERS}, got ${describeValue(workers)}`);
  }
  const replicas = workers * (processGroup?.size ?? 1);
  positiveInteger("epochs", epochs);
  positiveInteger("batch size", batchSize);
  if (batchSize < replicas) {
    throw new UsageError(
      `batch size ${batchSize} is smaller than the ${replicas} workers: each worker needs at least one example per step`,
    );
  }
  const shards = options.shards;
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
  if ((allReduce === "tcp") !== (processGroup !== undefined) && typeof allReduce === "string") {
    throw new UsageError(
      processGroup
        ? `with several processes the all-reduce is "tcp", got ${describeValue(allReduce)}`
        : `the "tcp" all-reduce joins several processes: give processGroup (--nnodes …)`,
    );
  }
  if (typeof lr !== "number" || !Number.isFinite(lr) || lr <= 0) {
    throw new UsageError(`learning rate must be a positive number, got ${describeValue(lr)}`);
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
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new UsageError(`seed must be a non-negative integer, got ${describeValue(seed)}`);
  }
  if (!BACKENDS.includes(backend)) {
    throw new UsageError(
      `backend must be one of ${BACKENDS.join(", ")}, got ${describeValue(backend)}`,
    );
  }
  if (!ALL_REDUCE_ALGORITHMS.includes(allReduce)) {
    throw new UsageError(
      `all-reduce must be one of ${ALL_REDUCE_ALGORITHMS.join(", ")}, got ${
        describeValue(allReduce)
      }`,
    );
  }
  if (!KERNEL_SETS.includes(kernels)) {
    throw new UsageError(
      `kernels must be one of ${KERNEL_SETS.join(", ")}, got ${describeValue(kernels)}`,
    );
  }
  if (
    options.stepTimeout !== undefined &&
    !(typeof options.stepTimeout === "number" && options.stepTimeout > 0 &&
      Number.isFinite(options.stepTimeout))
  ) {
    throw new UsageError(
      `step timeout must be a positive number of seconds, got ${
        describeValue(options.stepTimeout)
      }`,
    );
  }
  if (options.checkpointEvery !== undefined) {
    nonNegativeInteger("checkpoint interval", options.checkpointEvery);
  }
  if (options.keep !== undefined) positiveInteger("number of checkpoints to keep", options.keep);
  if (options.maxRestarts !== undefined) nonNegativeInteger("max restarts", options.maxRestarts);
  if (options.resume === true && options.checkpointDir === undefined) {
    throw new UsageError("resuming from the latest checkpoint needs a checkpoint directory");
  }
  optionalType("checkpoint directory", options.checkpointDir, "string");
  optionalType("data directory", options.dataDir, "string");
  optionalType("profile", options.profile, "boolean");
  optionalType("overwrite", options.overwrite, "boolean");
  optionalType("download", options.download, "boolean");
  const resume = options.resume;
  if (
    resume !== undefined && typeof resume !== "boolean" && !(typeof resume === "string" && resume)
  ) {
    throw new UsageError(
      `resume must be true, false or a checkpoint path, got ${describeValue(resume)}`,
    );
  }
  for (const name of ["onStart", "onStep", "onEvaluate", "onEpoch", "onCheckpoint", "onRestart"]) {
    optionalType(name, options[name as keyof TrainOptions], "function");
  }
  if (options.trainLimit !== undefined) positiveInteger("train limit", options.trainLimit);
  if (options.testLimit !== undefined) positiveInteger("test limit", options.testLimit);
  const ninOptions = Object.fromEntries(
    Object.entries({
      inputSize: options.inputSize,
      width: options.width,
      dropout: options.dropout,
      init: options.init,
      head: options.head,
    }).filter(([, value]) => value !== undefined),
  );
  if (options.model !== undefined && options.model !== "nin" && Object.keys(ninOptions).length) {
    throw new UsageError(
      `${Object.keys(ninOptions).join(", ")} ${
        Object.keys(ninOptions).length === 1 ? "applies" : "apply"
      } to NiN only, not to model ${
        describeValue(typeof options.model === "string" ? options.model : "(custom)")
      }`,
    );
  }
  const model = resolveModelConfig(options.model, { seed, options: ninOptions });
  const dataset = options.dataset ?? "fashion-mnist";
  if (!Object.hasOwn(DATASETS, dataset)) {
    throw new UsageError(
      `dataset must be one of ${Object.keys(DATASETS).join(", ")}, got ${describeValue(dataset)}`,
    );
  }
  const normalize = options.normalize;
  if (normalize !== undefined) {
    const ok = (values: unknown, positive: boolean) =>
      Array.isArray(values) && values.length > 0 &&
      values.every((v) => typeof v === "number" && Number.isFinite(v) && (!positive || v > 0));
    if (
      typeof normalize !== "object" || normalize === null || !ok(normalize.mean, false) ||
      !ok(normalize.std, true) || normalize.mean.length !== normalize.std.length
    ) {
      throw new UsageError(
        `normalize must be { mean, std }: equally long arrays of numbers, std above 0; got ${
          describeValue(normalize)
        }`,
      );
    }
  }
  return {
    workers,
    replicas,
    processGroup,
    epochs,
    batchSize,
    shards,
    batchShards: shards ?? replicas,
    shardsPerReplica: (shards ?? replicas) / replicas,
    lr,
    optimizer: optimizer as OptimizerConfig,
    schedule,
    seed,
    backend,
    allReduce,
    kernels,
    profile: options.profile ?? false,
    stepTimeout: options.stepTimeout,
    checkpointDir: options.checkpointDir,
    checkpointEvery: options.checkpointEvery ?? 0,
    keep: options.keep ?? 3,
    maxRestarts: options.maxRestarts ?? 0,
    model,
    dataset,
    normalize: normalize && { mean: [...normalize.mean], std: [...normalize.std] },
    trainLimit: options.trainLimit,
    testLimit: options.testLimit,
  };
}

/** `group` checked; undefined for a job of one process. */
function resolveProcessGroup(
  group: ProcessGroupOptions | undefined,
): ProcessGroupOptions | undefined {
  if (group === undefined) return undefined;
  if (typeof group !== "object" || group === null) {
    throw new UsageError(`processGroup must be an object, got ${describeValue(group)}`);
  }
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
  positiveInteger("processGroup.masterPort", group.masterPort);
  if (group.masterPort > 65535) {
    throw new UsageError(`processGroup.masterPort must be a port number, got ${group.masterPort}`);
  }
  optionalType("processGroup.token", group.token, "string");
  optionalType("processGroup.tokenFile", group.tokenFile, "string");
  optionalType("processGroup.onNotice", group.onNotice, "function");
  for (const name of ["peerTimeout", "joinTimeout"] as const) {
    const value = group[name];
    if (
      value !== undefined && !(typeof value === "number" && value > 0 && Number.isFinite(value))
    ) {
      throw new UsageError(
        `processGroup.${name} must be a positive number of seconds, got ${describeValue(value)}`,
      );
    }
  }
  return group.size === 1 ? undefined : { ...group };
}

/** Throws unless `value` is undefined or of `type` (a non-empty string, for strings). */
function optionalType(name: string, value: unknown, type: "string" | "boolean" | "function"): void {
  if (value === undefined || (typeof value === type && value !== "")) return;
  const what = { string: "a non-empty string", boolean: "true or false", function: "a function" };
  throw new UsageError(`${name} must be ${what[type]}, got ${describeValue(value)}`);
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
 * The {@linkcode TrainOptions} that select `model` again: a built-in's name
 * (with NiN's shape options), or a custom model's spec.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { modelOptions, resolveTrainOptions } from "./options.ts";
 *
 * const { model } = resolveTrainOptions({ width: 0.5, seed: 2 });
 * assert.deepEqual(modelOptions(model), {
 *   model: "nin", inputSize: 224, width: 0.5, dropout: 0.5, init: "he-normal", head: "random",
 * });
 * ```
 */
export function modelOptions(
  model: ModelConfig,
): Pick<TrainOptions, "model" | "inputSize" | "width" | "dropout" | "init" | "head"> {
  if (model.name === "custom") {
    return { model: { module: model.module!, export: model.export, options: model.options } };
  }
  if (model.name === "layers") return { model: { topology: model.topology } };
  if (model.name !== "nin") return { model: model.name as ModelName };
  const { inputSize, width, dropout, init, head } = model.options as Record<string, never>;
  return { model: "nin", inputSize, width, dropout, init, head };
}
