/**
 * Synchronous data-parallel training in TypeScript on WebGPU. A coordinator
 * shards every batch across worker threads; each holds a replica of the
 * model on TensorFlow.js' WebGPU backend and computes the gradient of its
 * share; the gradients are averaged in a fixed order and every replica
 * applies the same update, so the replicas stay bit-identical. Its first job
 * is d2l.ai §7.3's Network in Network on Fashion-MNIST; it trains any
 * TensorFlow.js image classifier on any data set in memory.
 *
 * This module is {@linkcode train}: its options, its result, what it reports
 * while it runs and the errors it throws. Beside it:
 *
 * - `./model` — the TensorFlow.js side: the built-in models, building and
 *   exporting a model, loading trained weights, evaluating;
 * - `./checkpoint` — reading the checkpoints a run writes;
 * - `./data` — Fashion-MNIST and the in-memory data set format;
 * - `./launch` — a process's place in a job, from torchrun's, Slurm's or
 *   Open MPI's variables;
 * - `./internal` — the machinery (option resolution, flat-vector optimizers,
 *   kernels), with no compatibility promise.
 *
 * @example Train d2l's NiN, the quick preset, on two workers
 * ```ts ignore
 * import { train } from "./mod.ts";
 *
 * const { history, checksum } = await train({
 *   preset: "quick",
 *   distributed: { workers: 2 },
 *   checkpoint: { dir: "out/ckpt", resume: true },
 *   stopOnSignals: true, // Ctrl-C: checkpoint at the next step boundary, then stop
 * });
 * console.log(history.at(-1)?.testAcc, checksum);
 * ```
 *
 * @module
 */

export { train, type TrainResult } from "./lib/train/coordinator/train.ts";
export {
  type CheckpointOptions,
  type DataOptions,
  type DistributedOptions,
  type ElasticOptions,
  type EpochRecord,
  type MpiProcessGroupOptions,
  type PresetName,
  PRESETS,
  type ProcessGroupOptions,
  type ResolvedCheckpoint,
  type ResolvedData,
  type ResolvedDistributed,
  type ResolvedProcessGroup,
  type ResolvedTrainOptions,
  type ServeOptions,
  type StepProgress,
  type StopOnSignalsOptions,
  type TcpProcessGroupOptions,
  type TraceOptions,
  type TrainOptions,
  type TrainStart,
  type WireFormat,
} from "./lib/train/shared/options.ts";
export type { StepTiming } from "./lib/train/shared/protocol.ts";
export type { MemberEvent } from "./lib/train/shared/member_protocol.ts";
export {
  DataError,
  DivergedError,
  InterruptedError,
  ReplicaDivergenceError,
  UsageError,
  WorkerError,
} from "./lib/errors.ts";
export { PeerError } from "./lib/collective/process_group.ts";
export { weightsChecksum } from "./lib/util/sha256.ts";
export type {
  LayersModelLike,
  ModelChoice,
  ModelConfig,
  ModelName,
  ModelSpec,
  NiNModel,
  ResNetModel,
} from "./lib/model/registry.ts";
export type { HeadInit, KernelInit, NiNOptions } from "./lib/model/nin.ts";
export type { ResNetOptions } from "./lib/model/resnet.ts";
export type { Dataset, Normalization } from "./lib/data/dataset.ts";
export type { DatasetName } from "./lib/data/registry.ts";
export type { LrSchedule, OptimizerConfig, OptimizerName } from "./lib/optim/mod.ts";
export type { AllReduceAlgorithm } from "./lib/collective/registry.ts";
export type { BackendName, DeviceInfo } from "./lib/train/shared/backend.ts";
export type { KernelSet } from "./lib/kernels/mod.ts";
