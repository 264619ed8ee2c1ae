/**
 * The library's machinery, for tools built on it and for its own scripts:
 * option resolution, the flat-vector optimizers and schedules, the WebGPU
 * kernels, the data sampler, checkpoint encoding. **No compatibility
 * promise**: anything here may change in any release. The API is `mod.ts`
 * and its sibling entry points.
 *
 * @example Resolve options as `train()` does, without training
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveTrainOptions } from "./internal.ts";
 *
 * const resolved = resolveTrainOptions({ preset: "quick", distributed: { workers: 2 } });
 * assert.equal(resolved.model.options.inputSize, 99);
 * assert.equal(resolved.distributed.batchShards, 2);
 * ```
 *
 * @module
 */

export { MAX_WORKERS } from "./lib/train/shared/options.ts";
export { resolveDistributed, resolveTrainOptions } from "./lib/train/shared/resolve.ts";
export { isLayersModel, modelChoice, resolveModelConfig } from "./lib/model/registry.ts";
export { HEAD_INITS, KERNEL_INITS, MIN_INPUT_SIZE } from "./lib/model/nin.ts";
export {
  Adam,
  type AdamOptions,
  createOptimizer,
  learningRateAt,
  type Optimizer,
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
export { acrossProcesses, ALL_REDUCE_ALGORITHMS } from "./lib/collective/registry.ts";
export { BACKENDS } from "./lib/train/shared/backend.ts";
export { KERNEL_SETS, useKernels } from "./lib/kernels/mod.ts";
export { checkDataset, checkSplits, exampleSize } from "./lib/data/dataset.ts";
export { DistributedSampler, type DistributedSamplerOptions } from "./lib/data/sampler.ts";
export { type DatasetEntry, DATASETS } from "./lib/data/registry.ts";
export { FASHION_MNIST_FILES, FASHION_MNIST_URL, type FileSpec } from "./lib/data/fashion_mnist.ts";
export {
  CHECKPOINT_FORMAT,
  CHECKPOINT_VERSION,
  decodeCheckpoint,
  encodeCheckpoint,
} from "./lib/train/shared/checkpoint.ts";
