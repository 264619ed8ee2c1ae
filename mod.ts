/**
 * Synchronous data-parallel training in TypeScript on WebGPU, across Deno
 * workers: d2l.ai §7.3's Network in Network on Fashion-MNIST.
 *
 * A coordinator shards the data across workers; each worker holds a NiN
 * replica on TensorFlow.js' WebGPU backend and computes the gradient of its
 * share of every batch; the gradients are all-reduced over message channels
 * and every replica applies the same SGD update.
 *
 * The TensorFlow.js side (the NiN model itself, one replica's training step)
 * is in `model.ts`, whose signatures use TensorFlow.js types.
 *
 * @example Train on four workers
 * ```ts ignore
 * import { train } from "./mod.ts";
 *
 * const { history, weights } = await train({ workers: 4, epochs: 10 });
 * console.log(history.at(-1), weights.length); // 1,992,166 weights
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
export {
  checkDataset,
  checkSplits,
  type Dataset,
  exampleSize,
  type Normalization,
} from "./lib/data/dataset.ts";
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
  defaultCacheDir,
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_FILES,
  FASHION_MNIST_URL,
  type FileSpec,
  loadFashionMNIST,
  type LoadFashionMnistOptions,
} from "./lib/data/fashion_mnist.ts";
export { type DownloadOptions, downloadVerified } from "./lib/data/download.ts";
export { type IdxImages, type IdxOptions, parseIdxImages, parseIdxLabels } from "./lib/data/idx.ts";
export { DistributedSampler, type DistributedSamplerOptions } from "./lib/data/sampler.ts";
export {
  type Batch,
  batchShard,
  type BatchShardOptions,
  gatherBatch,
  stepsPerEpoch,
} from "./lib/data/batches.ts";
export {
  KERNEL_INITS,
  type KernelInit,
  MIN_INPUT_SIZE,
  type NiNOptions,
  NUM_CLASSES,
  resolveNiNOptions,
} from "./lib/model/nin.ts";
export { type Channel, type Message, PostMessageChannel } from "./lib/collective/channel.ts";
export { Mailbox } from "./lib/collective/mailbox.ts";
export {
  ALL_REDUCE_ALGORITHMS,
  type AllReduceAlgorithm,
  type CollectiveEntry,
  type CollectiveHost,
  COLLECTIVES,
} from "./lib/collective/registry.ts";
export {
  type AllReduce,
  type AllReduceTiming,
  type Contribution,
  weightedAverage,
  type WeightedAverageOptions,
} from "./lib/collective/all_reduce.ts";
export {
  abortSharedAllReduce,
  createSharedAllReduceBuffer,
  SharedAllReduce,
  type SharedAllReduceShape,
} from "./lib/collective/shared_all_reduce.ts";
export { StarAllReduce, StarAllReduceHub } from "./lib/collective/star_all_reduce.ts";
export {
  type BackendName,
  BACKENDS,
  type DeviceInfo,
  initBackend,
} from "./lib/train/shared/backend.ts";
export { KERNEL_SETS, type KernelSet, useKernels } from "./lib/kernels/mod.ts";
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
export {
  adapterWithPath,
  chooseWebGPUPath,
  PREFERRED_PATHS,
  serialisedWorkersWarning,
  serialisesWorkers,
  type WebGPUPath,
} from "./lib/train/coordinator/webgpu_path.ts";
export { weightsChecksum } from "./lib/train/worker/replica.ts";
export {
  type EpochRecord,
  MAX_WORKERS,
  type PresetName,
  PRESETS,
  type ResolvedTrainOptions,
  resolveTrainOptions,
  type StepProgress,
  type TrainOptions,
  type TrainStart,
} from "./lib/train/shared/options.ts";
export { train, type TrainResult } from "./lib/train/coordinator/train.ts";
export {
  CHECKPOINT_FORMAT,
  CHECKPOINT_VERSION,
  type CheckpointFile,
  checkpointName,
  decodeCheckpoint,
  encodeCheckpoint,
  type EpochSums,
  latestCheckpoint,
  listCheckpoints,
  readCheckpoint,
  type RunConfig,
  type TrainingState,
  writeCheckpoint,
} from "./lib/train/shared/checkpoint.ts";
export type { StepTiming } from "./lib/train/shared/protocol.ts";
export {
  formatConfusion,
  formatDuration,
  formatEpoch,
  formatMetrics,
  formatPerClass,
  historyToJsonl,
} from "./lib/train/coordinator/report.ts";
export {
  type PlotOptions,
  renderConfusionSvg,
  renderHistorySvg,
} from "./lib/train/coordinator/plot.ts";
