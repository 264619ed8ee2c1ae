/**
 * Options of {@linkcode train}, grouped as a user thinks of a run — what to
 * train (`model`, `data`), how (`epochs` … `seed`), where (`backend`,
 * `distributed`), what to keep (`checkpoint`) and how to watch and stop it
 * (`signal`, `onStep`, …) — with d2l §7.3's defaults, validated group by
 * group with one-line errors and resolved once.
 *
 * @module
 */

import type { KernelSet } from "../../kernels/mod.ts";
import type { AllReduceAlgorithm } from "../../collective/registry.ts";
import type { Dataset, Normalization } from "../../data/dataset.ts";
import type { DatasetName } from "../../data/registry.ts";
import type { ModelChoice, ModelConfig, NiNModel, ResNetModel } from "../../model/registry.ts";
import type { LrSchedule, OptimizerConfig, OptimizerName } from "../../optim/mod.ts";
import type { BackendName, DeviceInfo } from "./backend.ts";
import type { StepTiming } from "./protocol.ts";
import type { MemberEvent } from "./member_protocol.ts";

/** The most workers one process starts: each is a thread with its own device and model copy. */
export const MAX_WORKERS = 256;

/** The named sets of defaults {@linkcode TrainOptions.preset} selects. */
export type PresetName = "d2l" | "quick" | "resnet18-quick";

/**
 * Named defaults: `d2l` (d2l.ai's configuration: the built-in defaults) and
 * `quick` (a NiN small enough to learn Fashion-MNIST in minutes on a 2-core
 * CPU machine: 99 px — the smallest input whose last block sees 2×2 pixels —
 * ⅛ width, no dropout, a class-score layer that starts at zero so that no
 * class starts without gradient, 3 epochs at batch 128 and lr 0.1), and
 * `resnet18-quick` (d2l's ResNet-18 at Fashion-MNIST's own 28 px and ⅛ of
 * its channels, 2 epochs at d2l's batch 256 and lr 0.05: test accuracy
 * about 0.83 in about 5 minutes on a 2-core CPU machine). Options
 * given explicitly override a preset's values; a resumed run takes its
 * settings from the checkpoint, whatever the preset says.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PRESETS } from "../../../mod.ts";
 *
 * assert.equal(PRESETS.quick.model.inputSize, 99);
 * ```
 */
export const PRESETS: Readonly<{
  d2l: Readonly<TrainOptions>;
  quick: Readonly<TrainOptions & { model: NiNModel }>;
  "resnet18-quick": Readonly<TrainOptions & { model: ResNetModel }>;
}> = Object.freeze({
  d2l: Object.freeze({}),
  quick: Object.freeze(
    {
      model: Object.freeze({ name: "nin", inputSize: 99, width: 0.125, dropout: 0, head: "zero" }),
      epochs: 3,
      batchSize: 128,
    } as const,
  ),
  "resnet18-quick": Object.freeze(
    {
      model: Object.freeze({ name: "resnet18", inputSize: 28, width: 0.125 }),
      epochs: 2,
    } as const,
  ),
});

/** Where the examples come from: a named data set (downloaded once) or arrays in memory. */
export interface DataOptions {
  /**
   * The data set to load by name when `train` and `test` are not given:
   * `"fashion-mnist"` (the default) or `"cifar10"`.
   */
  dataset?: DatasetName;
  /** Directory with the data set's files (see `loadFashionMNIST`, `loadCIFAR10`). */
  dir?: string;
  /** Download the data set when no copy is found. Default true. */
  download?: boolean;
  /** Training examples in memory (with `test`); `dataset`, `dir` and `download` are then unused. */
  train?: Dataset;
  /** Test examples in memory (with `train`). */
  test?: Dataset;
  /** Train on the first `trainLimit` training examples only. */
  trainLimit?: number;
  /** Evaluate on the first `testLimit` test examples only. */
  testLimit?: number;
  /**
   * Per-channel normalisation of the input, after bytes are scaled to [0, 1]:
   * `(x − mean) / std`. Default none (d2l's `ToTensor` only).
   */
  normalize?: Normalization;
}

/** How the work is spread: worker threads here, and other processes. */
export interface DistributedOptions {
  /** Data-parallel worker replicas in this process, each a thread with its own device. Default 1. */
  workers?: number;
  /**
   * Cut every global batch into this many equal shards (default: one per
   * replica, over all processes). Each worker computes whole shards, one
   * after the other, and every shard's gradient is its own term of the
   * average, in shard order: runs with the same `shards` give bit-identical
   * weights with any number of workers that divides it. At most 256, at most
   * the batch size.
   */
  shards?: number;
  /**
   * How gradients are averaged: `"shared"` (default in one process, over
   * shared memory) or `"star"` (through the coordinator); across processes
   * `"tcp"` (the default with `processGroup`) or `"mpi"` (the system's MPI
   * library: implies `processGroup: { backend: "mpi" }`).
   */
  allReduce?: AllReduceAlgorithm;
  /**
   * Shard the optimizer across this process's workers (ZeRO stage 1): each
   * updates its chunk of the weights with its chunk of the optimizer state,
   * and the all-gather carries updated weights. The same bits as unsharded
   * (the updates are element-wise), 1/`workers` of the optimizer's time and
   * state per worker. Applies with the `shared` all-reduce and 2 or more
   * workers; checkpoints still hold the whole state. Default true.
   */
  shardOptimizer?: boolean;
  /**
   * How gradients travel between processes: `"float32"` (the default) or
   * `"bf16"`, half the bytes: every replica's gradient is rounded to
   * bfloat16 before it is averaged, the sum is still float64 in rank order,
   * and the average is rounded to bfloat16 — on every path, in one process
   * too, so the bits still do not depend on how replicas are split into
   * threads and processes. Batch-normalisation statistics stay float32.
   */
  wire?: WireFormat;
  /**
   * This process's place in a job of several processes, each running
   * `workers` replicas (read it from a launcher's environment with
   * `launchInfo`). Every process must be given the same options; only rank 0
   * writes checkpoints.
   */
  processGroup?: ProcessGroupOptions;
  /**
   * Seconds without progress after which the run stops with an error naming
   * the worker the others wait for. Default: adaptive — `startupTimeout` until
   * the first step completes (shader compilation), then 20 × the slowest
   * step so far, at least 5 minutes.
   */
  stepTimeout?: number;
  /**
   * Seconds the workers may take to start — create their devices and build
   * the model — and, once started, to finish their first step (which
   * compiles the shaders). Past it the run stops with an error naming the
   * worker and what it was still doing. Default 1800 (30 min).
   */
  startupTimeout?: number;
  /**
   * After a worker fails or stalls, restart every worker from the last
   * checkpoint (on disk or, without a checkpoint directory, kept in memory)
   * at most this many times. Default 0.
   */
  maxRestarts?: number;
  /**
   * Module each worker runs in a `node:worker_threads` thread. Default: the
   * library's `workers/replica_worker.ts`. A replacement must call
   * `serveReplica(parentChannel())` (e.g. after registering extra tfjs kernels).
   */
  workerUrl?: URL | string;
}

/** Where the run is saved, and whether it continues from there. */
export interface CheckpointOptions {
  /** Directory for checkpoints; without it nothing is written to disk. */
  dir?: string;
  /** Also checkpoint every this many steps within an epoch (0: only after each epoch). Default 0. */
  every?: number;
  /** This run's checkpoints kept in `dir`, newest first. Default 3. */
  keep?: number;
  /**
   * Continue from a checkpoint: `true` for the newest usable one in `dir` (a
   * fresh start when there is none), or a file's path. The run keeps the
   * checkpoint's settings; options that would change its results must match
   * them or be left out, and a model of your own must be given again (a
   * checkpoint is data: see SECURITY.md). Resumed with the same shards, the
   * weights equal an uninterrupted run's bit for bit.
   */
  resume?: boolean | string;
  /**
   * Start a fresh run in a `dir` that holds other checkpoints (another run's,
   * or files named like checkpoints): they are deleted once this run's first
   * checkpoint is written. Default false: such a directory is refused before
   * any work is done.
   */
  overwrite?: boolean;
}

/** Options of {@linkcode train}. Every field is optional; the defaults are d2l §7.3's. */
export interface TrainOptions {
  /** Defaults to start from: `"d2l"` (the default) or `"quick"`; see {@linkcode PRESETS}. */
  preset?: PresetName;
  /**
   * The model: `"nin"` (the default, d2l §7.3) or `{ name: "nin", inputSize,
   * width, dropout, init, head }`; `"lenet"` (d2l §7.6, trained at lr 0.9 and
   * batch 256 unless told otherwise); `"resnet18"` or `{ name: "resnet18",
   * inputSize, width, channels, classes }` (d2l §8.6, lr 0.05 and batch 256
   * unless told otherwise; its channels are the data's unless given); or
   * your own: a tfjs `LayersModel` (its
   * topology and current weights go to every worker), `{ topology }`, or a
   * module and the function it exports (`{ module, export, options }`).
   */
  model?: ModelChoice;
  /** The examples: a named data set (default Fashion-MNIST) or your own arrays. */
  data?: DataOptions;
  /** Passes over the training set. Default 10. */
  epochs?: number;
  /** Global batch size, split across the replicas. Default 128. */
  batchSize?: number;
  /** Base learning rate. Default 0.1 (d2l's). */
  lr?: number;
  /**
   * The optimizer: `"sgd"` (the default) or `"adam"`, or a name with
   * hyper-parameters, e.g. `{ name: "sgd", momentum: 0.9, nesterov: true,
   * weightDecay: 5e-4 }`.
   */
  optimizer?: OptimizerName | OptimizerConfig;
  /** The learning rate of each step, e.g. `{ name: "cosine", warmupEpochs: 1 }`. Default constant. */
  schedule?: LrSchedule;
  /** Seed of the weight initialisation, the shuffle and dropout. Default 0. */
  seed?: number;
  /** TensorFlow.js backend in every worker: `"webgpu"` (default) or `"cpu"`. */
  backend?: BackendName;
  /** WebGPU kernels: `"fast"` (default; this library's convolutions) or `"tfjs"` (tfjs's own). */
  kernels?: KernelSet;
  /** Workers, shards, the all-reduce, other processes, and what happens when a worker fails. */
  distributed?: DistributedOptions;
  /** Checkpoints: where, how often, how many, and resuming. */
  checkpoint?: CheckpointOptions;
  /**
   * Aborting stops training at the next step boundary on every worker; with
   * a checkpoint directory a checkpoint is written first. `train()` then
   * rejects with an `InterruptedError`.
   */
  signal?: AbortSignal;
  /**
   * Stop as `deno task train` does on Ctrl-C (SIGINT) and SIGTERM: at the
   * next step boundary, after a checkpoint; a second signal ends the process
   * at once (exit 130 or 143), and after SIGTERM so does a step boundary not
   * reached within 25 s. Says so on stderr. The listeners are removed when
   * `train()` settles. Default false.
   */
  stopOnSignals?: boolean | StopOnSignalsOptions;
  /**
   * Time the phases of every step on every worker, reported in
   * {@linkcode StepProgress.timings}. Adds two device synchronisations per step.
   */
  profile?: boolean;
  /**
   * Write a Chrome trace event file (open it in Perfetto or
   * `chrome://tracing`) of a few steps: on every worker, the host's phases
   * and every GPU kernel with its duration from WebGPU timestamp queries. A
   * path, or `{ file, steps }` (default 5 steps, after the first, which
   * compiles the shaders). Tracing slows the traced steps (a compute pass
   * and two timestamps per kernel, a device wait per step). With several
   * processes, rank r > 0 writes `FILE` with `.rank<r>` before its extension.
   */
  trace?: string | TraceOptions;
  /**
   * Serve a live dashboard of the run: a page with its loss and accuracy
   * curves, speed and members, at `http://hostname:port/`, shown only to a
   * page that proves the job's token (see {@linkcode ServeOptions}). In a
   * job of several processes, rank 0 serves it; the others ignore it.
   */
  serve?: ServeOptions;
  /** Called once the workers are ready, before the first step. */
  onStart?: (info: TrainStart) => void;
  /** Called after every global step. */
  onStep?: (progress: StepProgress) => void;
  /** Called as the test set is evaluated after an epoch (examples done of all). */
  onEvaluate?: (progress: { epoch: number; done: number; total: number }) => void;
  /** Called after every epoch with its metrics; training waits for a returned promise. */
  onEpoch?: (record: EpochRecord) => void | Promise<void>;
  /** Called after each checkpoint is written, with its path. */
  onCheckpoint?: (path: string) => void;
  /** Called when the workers are restarted after a failure. */
  onRestart?: (info: { restart: number; maxRestarts: number; error: Error; from: string }) => void;
}

/** {@linkcode TrainOptions.stopOnSignals} with a hook. */
export interface StopOnSignalsOptions {
  /** Called when a signal arrives, before its line is printed (e.g. to clear a progress bar). */
  onSignal?: (signal: "SIGINT" | "SIGTERM") => void;
}

/**
 * Where this process stands in a multi-process job, and how it joins the
 * others: over this library's TCP protocol ({@linkcode TcpProcessGroupOptions},
 * the default), or through the system's MPI library
 * ({@linkcode MpiProcessGroupOptions}, under `mpirun` or `srun`).
 */
export type ProcessGroupOptions = TcpProcessGroupOptions | MpiProcessGroupOptions;

/**
 * A process group over MPI (Open MPI, loaded through FFI: Deno needs
 * `--allow-ffi`): rank and size come from `MPI_COMM_WORLD`; averages give
 * the bits of the TCP group and of one process. A process that fails ends
 * the job (the MPI launcher stops the others): no restarts, no heartbeats.
 */
export interface MpiProcessGroupOptions {
  /** Selects MPI. */
  backend: "mpi";
  /** The MPI library to load (default: `DDP_MPI_LIBRARY`, else `libmpi.so.40`). */
  library?: string;
  /** Filled in from MPI when the options are resolved; a value given must match it. */
  rank?: number;
  /** Filled in from MPI when the options are resolved; a value given must match it. */
  size?: number;
}

/** A process group over this library's TCP protocol (see {@linkcode ProcessGroupOptions}). */
export interface TcpProcessGroupOptions {
  /** `"tcp"` (the default). */
  backend?: "tcp";
  /** This process's rank, from 0. */
  rank: number;
  /** Number of processes. */
  size: number;
  /** Rank 0's host: rank 0 listens there (e.g. `"127.0.0.1"` for one machine). */
  masterAddr: string;
  /**
   * Rank 0's port. Rank 0 may give 0: it listens on a free port, tells
   * `onListening`, and keeps that port for the run's restarts.
   */
  masterPort: number;
  /** The shared secret, at least 16 characters (or `tokenFile`, or `DDP_TOKEN`). */
  token?: string;
  /** A file holding the shared secret. */
  tokenFile?: string;
  /** Seconds of silence after which a peer is presumed dead. Default 60. */
  peerTimeout?: number;
  /** Seconds to wait for every process to join. Default 600. */
  joinTimeout?: number;
  /**
   * Told, one line each, what happens at the rendezvous: rank 0, about
   * connections it refused and processes that left; the others, once admitted.
   */
  onNotice?: (line: string) => void;
  /** Rank 0: told the port it listens on, once it does (the one chosen for port 0). */
  onListening?: (port: number) => void;
}

/** {@linkcode ProcessGroupOptions} resolved: rank and size known (MPI's, under MPI). */
export type ResolvedProcessGroup =
  | TcpProcessGroupOptions
  | (MpiProcessGroupOptions & { rank: number; size: number; version: string });

/** The options with every default filled in and every value checked. */
export interface ResolvedTrainOptions {
  /** The model, its options resolved, seed included. */
  model: ModelConfig;
  /** The data settings (arrays given in memory stay in the options). */
  data: ResolvedData;
  /** Number of epochs. */
  epochs: number;
  /** Global batch size. */
  batchSize: number;
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
  /** WebGPU kernel set. */
  kernels: KernelSet;
  /** Whether steps are profiled. */
  profile: boolean;
  /** Workers, shards and processes. */
  distributed: ResolvedDistributed;
  /** Checkpoint settings. */
  checkpoint: ResolvedCheckpoint;
}

/** {@linkcode DataOptions} resolved. */
export interface ResolvedData {
  /** The data set loaded when none is given in memory. */
  dataset: DatasetName;
  /** Its directory, if given. */
  dir: string | undefined;
  /** Whether a missing data set is downloaded. */
  download: boolean;
  /** Number of training examples used, or undefined for all. */
  trainLimit: number | undefined;
  /** Number of test examples used, or undefined for all. */
  testLimit: number | undefined;
  /** Input normalisation, if any. */
  normalize: Normalization | undefined;
}

/** {@linkcode DistributedOptions} resolved. */
export interface ResolvedDistributed {
  /** Worker replicas in this process. */
  workers: number;
  /** Replicas in the job: `workers` × processes. */
  replicas: number;
  /** Shards per global batch as given; undefined: one per replica. Recorded in checkpoints. */
  shards: number | undefined;
  /** Shards per global batch: `shards`, or one per replica. A multiple of `replicas`. */
  batchShards: number;
  /** Shards each replica computes per step: `batchShards / replicas`. */
  shardsPerReplica: number;
  /** All-reduce algorithm. */
  allReduce: AllReduceAlgorithm;
  /** Whether the optimizer is sharded across the workers (where it can be: `shared`, ≥ 2 workers). */
  shardOptimizer: boolean;
  /** How gradients travel (see {@linkcode DistributedOptions.wire}). */
  wire: WireFormat;
  /** The processes of the job, when there are several. */
  processGroup: ResolvedProcessGroup | undefined;
  /** Step timeout in seconds, or undefined for the adaptive default. */
  stepTimeout: number | undefined;
  /** Seconds to start and to finish the first step. */
  startupTimeout: number;
  /** Restarts allowed after a worker failure. */
  maxRestarts: number;
}

/** {@linkcode CheckpointOptions} resolved. */
export interface ResolvedCheckpoint {
  /** Checkpoint directory, if any. */
  dir: string | undefined;
  /** Steps between checkpoints within an epoch (0: only after each epoch). */
  every: number;
  /** Checkpoints kept. */
  keep: number;
  /** What to resume from, if anything. */
  resume: true | string | undefined;
  /** Whether another run's checkpoints may be replaced. */
  overwrite: boolean;
}

/** The form gradients travel in: float32, or bfloat16 (half the bytes). */
export type WireFormat = "float32" | "bf16";

/** Options of {@linkcode TrainOptions.serve}. */
export interface ServeOptions {
  /** Interface to listen on, e.g. `"127.0.0.1"` (browsers answer the token's challenge on localhost and https only). */
  hostname: string;
  /** Port; 0 picks a free one (told to `onListening`). */
  port: number;
  /**
   * The token a page must prove, at least 16 characters: default the job's
   * (`processGroup.token`, `tokenFile` or `DDP_TOKEN`), else a fresh one,
   * given in `onListening`'s URL.
   */
  token?: string;
  /** Told the page's address once the server listens (with `#token=…` when the token is fresh). */
  onListening?: (url: string) => void;
  /**
   * Elastic membership: other Deno processes (`deno task train --join
   * HOST:PORT`) join the run at `/member` with the token, and leave, without
   * a restart. Each step's `distributed.shards` shards are handed out to the
   * members one at a time; this process averages them in shard order and
   * applies the optimizer, so the weights equal a fixed run's with the same
   * shards, whoever computed them (members with the same kind of device: bit
   * for bit). `true` takes the defaults. One process only (no `processGroup`).
   */
  elastic?: boolean | ElasticOptions;
}

/** Options of {@linkcode ServeOptions.elastic}. */
export interface ElasticOptions {
  /**
   * Members needed to compute, this process's workers included (default
   * 1); with fewer, the run waits at a step boundary until more join.
   */
  minMembers?: number;
  /** Told each change of membership (a member joined or left, the run paused or resumed). */
  onMember?: (event: MemberEvent) => void;
  /**
   * The share of results from members outside this process (0 to 1,
   * default 0) that this process's workers recompute before they count,
   * drawn at random so that no member can tell which. A member whose
   * result differs is dropped and named: on the same kind of device as this
   * process, by any difference; on another, by a relative difference over
   * `verifyTolerance`. A result that arrives after this process's for the
   * same shard is compared too, at no cost. A member that cheats on a share
   * `p` of its shards escapes `k` of them with chance `(1 − fraction·p)^k`;
   * a change within the tolerance is not caught at all.
   */
  verify?: number;
  /**
   * With `verify`: the largest relative difference (the L2 norm of the
   * difference over the trusted gradient's; the loss and correct count
   * alike) accepted from a member on another kind of device. Default 0.001,
   * from an error model: float32 sums in another order differ by about
   * `2⁻²⁴·√K` relative for `K` terms (up to ~4·10⁵ in d2l's NiN's weight
   * gradients), over ~10 layers: ~3·10⁻⁴. Measured between SwiftShader and
   * llvmpipe on a small NiN: up to ~5·10⁻⁶ (docs/elastic.md).
   */
  verifyTolerance?: number;
}

/** {@linkcode ElasticOptions.verifyTolerance}'s default. */
export const DEFAULT_VERIFY_TOLERANCE = 1e-3;

/** Options of {@linkcode TrainOptions.trace}. */
export interface TraceOptions {
  /** Where to write the trace (a `.json` file). */
  file: string;
  /** Steps to trace, 1 to 100. Default 5. */
  steps?: number;
}

/** What {@linkcode TrainOptions.onStart} is told. */
export interface TrainStart {
  /** The device of worker 0 (all workers use the same backend). */
  device: DeviceInfo;
  /** The resolved configuration (a resumed run's: the checkpoint's settings). */
  options: ResolvedTrainOptions;
  /**
   * Number of model parameters: the trainable weights, as PyTorch counts
   * them (batch-normalisation statistics and frozen weights not included).
   */
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
