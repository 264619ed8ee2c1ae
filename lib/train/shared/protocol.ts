/**
 * The messages exchanged between the coordinator and its replica workers.
 *
 * One training run, as seen on the channel of one worker:
 *
 * ```
 * coordinator → worker   init          rank, world size, config, shared data set
 * worker → coordinator   ready         device; local rank 0 adds its initial weights
 * coordinator → worker   start         the weights to start from (rank 0's, or a
 *                                      checkpoint's) and the shared all-reduce's buffer
 * coordinator → worker   epoch         run an epoch from a step, up to a granted step
 * coordinator → worker   grant         you may run steps below `upTo`
 * worker ↔ coordinator   allreduce     once per step, star all-reduce only
 * worker → coordinator   step          loss sum, correct, count of its shard
 * worker → coordinator   checkpoint    rank 0, every `checkpointEvery` steps: weights
 * worker → coordinator   evalProgress  after each evaluation batch
 * worker → coordinator   epochEnd      test-set counts, weight checksum (rank 0: weights)
 * coordinator → worker   getWeights    / worker → coordinator weights
 * worker → coordinator   error         anything that went wrong, then it stops
 * ```
 *
 * Steps are granted a few at a time, so the coordinator can stop every worker
 * at the same step boundary (to checkpoint on Ctrl-C) without a race.
 *
 * @module
 */

import type { NameEvent, TraceEvent } from "../../util/trace_events.ts";
import type { AllReduceAlgorithm } from "../../collective/registry.ts";
import type { Message } from "../../collective/channel.ts";
import type { Dataset } from "../../data/dataset.ts";
import type { ModelConfig } from "../../model/registry.ts";
import type { KernelSet } from "../../kernels/mod.ts";
import type { LrSchedule, OptimizerConfig, OptimizerState } from "../../optim/mod.ts";
import type { BackendName, DeviceInfo } from "./backend.ts";
import type { WireFormat } from "./options.ts";
import type { Normalization } from "../../data/dataset.ts";

/** Everything a replica needs to know to train; identical on every rank. */
export interface ReplicaConfig {
  /** TensorFlow.js backend. */
  backend: BackendName;
  /** The model to build (every rank builds the same). */
  model: ModelConfig;
  /** Input normalisation, if any. */
  normalize: Normalization | undefined;
  /** Base learning rate. */
  lr: number;
  /** The optimizer. */
  optimizer: OptimizerConfig;
  /** The learning rate of each step. */
  schedule: LrSchedule;
  /** Epochs in the run (the schedule spans them). */
  epochs: number;
  /** Global steps per epoch, as the coordinator counts them. */
  stepsPerEpoch: number;
  /** Seed of the sampler's shuffle and of the dropout masks. */
  seed: number;
  /** Global batch size. */
  batchSize: number;
  /** Shards per global batch, a multiple of the replicas. */
  batchShards: number;
  /** Shards each replica computes per step (consecutive indices from `rank × shardsPerReplica`). */
  shardsPerReplica: number;
  /** Examples per forward pass when evaluating. */
  evalBatchSize: number;
  /** Workers of each process: the group the in-process all-reduce joins. */
  localWorkers: number;
  /** How gradients are averaged. */
  allReduce: AllReduceAlgorithm;
  /** Whether the workers shard the optimizer (ZeRO stage 1, through the all-reduce). */
  shardOptimizer: boolean;
  /** `"bf16"`: gradients and their averages are rounded to bfloat16 (see `DistributedOptions.wire`). */
  wire: WireFormat;
  /** WebGPU kernel set. */
  kernels: KernelSet;
  /** Time each step's phases (see {@linkcode StepTiming}). */
  profile: boolean;
  /**
   * Trace this many steps of the first epoch the worker runs (after its
   * first step, which compiles the shaders) and send them in a
   * {@linkcode TraceMessage}.
   */
  trace?: { steps: number };
}

/** Where one step spent its time on one worker, in milliseconds. */
export interface StepTiming {
  /** Gathering the batch, upload, resize, forward and backward pass. */
  computeMs: number;
  /** Reading the gradient back from the device. */
  readbackMs: number;
  /** The all-reduce, waiting for other workers excluded. */
  allReduceMs: number;
  /** Waiting in the all-reduce for slower workers. */
  waitMs: number;
  /** Uploading the averaged gradient and applying the SGD update on the device. */
  optimizerMs: number;
  /** TensorFlow.js tensors alive in the worker after the step: flat unless something leaks. */
  tensors: number;
}

/**
 * Coordinator → worker: become replica `rank` of `worldSize` in the job, the
 * coordinator's worker `localRank`. Workers name themselves by `localRank` in
 * every message to their coordinator.
 */
export interface InitMessage extends Message {
  type: "init";
  rank: number;
  worldSize: number;
  localRank: number;
  config: ReplicaConfig;
  /** Training set; its arrays live in shared memory. */
  train: Dataset;
  /** Test set; its arrays live in shared memory. */
  test: Dataset;
  /** 0 for the first group of workers, n after the n-th restart. */
  attempt: number;
}

/** Worker → coordinator: what it is doing while it starts (named if it takes too long). */
export interface PhaseMessage extends Message {
  type: "phase";
  rank: number;
  /** E.g. "creating its webgpu device", "building the model (createModel of file:///m.ts)". */
  phase: string;
}

/** Worker → coordinator: the replica is built. */
export interface ReadyMessage extends Message {
  type: "ready";
  rank: number;
  device: DeviceInfo;
  /** Length of a weight vector: trainable weights, statistics and frozen ones. */
  numWeights: number;
  /** Number of trainable weights. */
  numParams: number;
  /** Length of the vector the all-reduce averages: trainable weights, then statistics. */
  numReduced: number;
  /** The model's input, `[height, width, channels]`. */
  inputShape: readonly [number, number, number];
  /** The number of classes the model tells apart. */
  numClasses: number;
  /** Rank 0 only: its initial weights, to be broadcast. */
  weights?: Float32Array<ArrayBuffer>;
}

/** Coordinator → worker: every replica is built; start from these weights. */
export interface StartMessage extends Message {
  type: "start";
  /** The weights to start from; absent when they are the worker's own (rank 0, fresh run). */
  weights?: Float32Array<ArrayBuffer>;
  /** The optimizer state to start from (a checkpoint's); absent for a fresh one. */
  optimizer?: OptimizerState;
  /** What the all-reduce needs to join (see `CollectiveHost.joinInfo`; shared memory, or nothing). */
  collective: unknown;
}

/**
 * Coordinator → worker: run epoch `epoch` from step `fromStep`. Epochs count
 * from 1 in every message, as users see them; steps from 0.
 */
export interface EpochMessage extends Message {
  type: "epoch";
  epoch: number;
  fromStep: number;
  /** Steps below this may run without waiting for a grant. */
  grantUpTo: number;
  /** Rank 0 sends its weights for a checkpoint after these numbers of steps. */
  snapshotAfter: number[];
}

/** Coordinator → worker: steps of the current epoch below `upTo` may run. */
export interface GrantMessage extends Message {
  type: "grant";
  upTo: number;
}

/** Worker → coordinator: one step done; metrics of this worker's shard. */
export interface StepMessage extends Message {
  type: "step";
  rank: number;
  epoch: number;
  step: number;
  lossSum: number;
  correct: number;
  count: number;
  /** When profiling: where the step spent its time. */
  timing?: StepTiming;
}

/** Rank 0 → coordinator: the weights after `stepsDone` steps of epoch `epoch`, for a checkpoint. */
export interface CheckpointMessage extends Message {
  type: "checkpoint";
  epoch: number;
  stepsDone: number;
  weights: Float32Array<ArrayBuffer>;
  checksum: string;
  optimizer: OptimizerState;
}

/** Worker → coordinator: one evaluation batch done. */
export interface EvalProgressMessage extends Message {
  type: "evalProgress";
  rank: number;
  /** Test examples this worker has evaluated so far this epoch. */
  done: number;
}

/** Worker → coordinator: the epoch is done. */
export interface EpochEndMessage extends Message {
  type: "epochEnd";
  rank: number;
  epoch: number;
  testCorrect: number;
  testCount: number;
  /** SHA-256 of the replica's weights after the epoch. */
  checksum: string;
  /** Rank 0 only: the weights themselves. */
  weights?: Float32Array<ArrayBuffer>;
  /** Rank 0 only: the optimizer's state. */
  optimizer?: OptimizerState;
}

/** Coordinator → worker: send your weights. */
export interface GetWeightsMessage extends Message {
  type: "getWeights";
}

/** Worker → coordinator: the weights asked for. */
export interface WeightsMessage extends Message {
  type: "weights";
  weights: Float32Array<ArrayBuffer>;
  checksum: string;
  optimizer: OptimizerState;
}

/**
 * Worker → coordinator, once, after the traced steps: their host phases and
 * device kernels as Chrome trace events, and what could not be timed.
 */
export interface TraceMessage extends Message {
  type: "trace";
  rank: number;
  /** The events, on this worker's process row (see `TraceRecorder`). */
  events: TraceEvent[];
  /** The metadata events naming its rows. */
  names: NameEvent[];
  /** Notes for the reader, e.g. that the adapter could not time kernels. */
  notes: string[];
}

/** Worker → coordinator: something failed; the worker does nothing more. */
export interface ErrorMessage extends Message {
  type: "error";
  message: string;
  /** Set when the model cannot be built as configured (the user's to fix): do not restart. */
  model?: boolean;
  /** Set when the step diverged (see `DivergedError`): stop, do not restart. */
  diverged?: { epoch: number; step: number; what: string };
}
