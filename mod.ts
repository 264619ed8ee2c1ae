/**
 * Synchronous data-parallel training in TypeScript on WebGPU, across Deno
 * workers. Its first job is d2l.ai §7.3's Network in Network on
 * Fashion-MNIST; it trains any TensorFlow.js model on any in-memory
 * image-classification data set.
 *
 * A coordinator shards the data across workers; each worker holds a replica
 * of the model on TensorFlow.js' WebGPU backend and computes the gradient of
 * its share of every batch; the gradients are all-reduced and every replica
 * applies the same optimizer update, so the replicas stay bit-identical.
 *
 * This module is the library's API: {@linkcode train} and its options and
 * results, the errors it throws, data sets, models, optimizers and schedules,
 * and reading checkpoints. The TensorFlow.js side (building models, one
 * replica's step, exporting) is in `model.ts`, whose signatures use
 * TensorFlow.js types.
 *
 * @example Train d2l's NiN on four workers
 * ```ts ignore
 * import { train } from "./mod.ts";
 *
 * const { history, weights } = await train({ workers: 4, epochs: 10 });
 * console.log(history.at(-1), weights.length); // 1,992,166 weights
 * ```
 *
 * @example LeNet with momentum and a cosine schedule, resumable
 * ```ts ignore
 * import { train } from "./mod.ts";
 *
 * await train({
 *   model: "lenet",
 *   workers: 2,
 *   optimizer: { name: "sgd", momentum: 0.9 },
 *   lr: 0.05,
 *   schedule: { name: "cosine", warmupEpochs: 1 },
 *   checkpointDir: "./checkpoints",
 *   resume: true,
 * });
 * ```
 *
 * @module
 */

export {
  DataError,
  DivergedError,
  InterruptedError,
  ReplicaDivergenceError,
  UsageError,
  WorkerError,
} from "./lib/errors.ts";
export { train, type TrainResult } from "./lib/train/coordinator/train.ts";
export {
  type EpochRecord,
  MAX_WORKERS,
  type PresetName,
  PRESETS,
  type ProcessGroupOptions,
  type ResolvedTrainOptions,
  resolveTrainOptions,
  type StepProgress,
  type TrainOptions,
  type TrainStart,
} from "./lib/train/shared/options.ts";
export type { StepTiming } from "./lib/train/shared/protocol.ts";
export { PeerError } from "./lib/collective/process_group.ts";
export {
  DEFAULT_MASTER_PORT,
  type LaunchFlags,
  type LaunchInfo,
  launchInfo,
} from "./lib/collective/tcp/launch_env.ts";
export {
  checkDataset,
  checkSplits,
  type Dataset,
  exampleSize,
  type Normalization,
} from "./lib/data/dataset.ts";
export {
  defaultCacheDir,
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_FILES,
  FASHION_MNIST_URL,
  type FileSpec,
  loadFashionMNIST,
  type LoadFashionMnistOptions,
} from "./lib/data/fashion_mnist.ts";
export { DistributedSampler, type DistributedSamplerOptions } from "./lib/data/sampler.ts";
export { type DatasetEntry, type DatasetName, DATASETS } from "./lib/data/registry.ts";
export {
  flatWeightsOf,
  isLayersModel,
  type LayersModelLike,
  type ModelConfig,
  type ModelEntry,
  type ModelName,
  MODELS,
  type ModelSpec,
  resolveModelConfig,
} from "./lib/model/registry.ts";
export {
  HEAD_INITS,
  type HeadInit,
  KERNEL_INITS,
  type KernelInit,
  MIN_INPUT_SIZE,
  type NiNOptions,
} from "./lib/model/nin.ts";
export {
  Adam,
  type AdamOptions,
  createOptimizer,
  learningRateAt,
  type LrSchedule,
  type Optimizer,
  type OptimizerConfig,
  type OptimizerName,
  optimizerProblem,
  OPTIMIZERS,
  type OptimizerState,
  parseSchedule,
  type SchedulePosition,
  scheduleProblem,
  SCHEDULES,
  SGD,
  type SGDOptions,
} from "./lib/optim/mod.ts";
export { ALL_REDUCE_ALGORITHMS, type AllReduceAlgorithm } from "./lib/collective/registry.ts";
export {
  type BackendName,
  BACKENDS,
  type DeviceInfo,
  initBackend,
} from "./lib/train/shared/backend.ts";
export { KERNEL_SETS, type KernelSet, useKernels } from "./lib/kernels/mod.ts";
export { weightsChecksum } from "./lib/train/worker/replica.ts";
export {
  CHECKPOINT_FORMAT,
  CHECKPOINT_VERSION,
  type CheckpointFile,
  type EpochSums,
  latestCheckpoint,
  listCheckpoints,
  readCheckpoint,
  type RunConfig,
  type TrainingState,
} from "./lib/train/shared/checkpoint.ts";
