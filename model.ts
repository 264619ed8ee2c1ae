/**
 * The TensorFlow.js side of the library: d2l's NiN model and one replica's
 * training step, for single-process use, inference with trained weights, or
 * custom training loops. Its signatures use TensorFlow.js types, which is why
 * it is a separate entry point from `mod.ts`.
 *
 * @example Load weights returned by `train()` into a model for inference
 * ```ts ignore
 * import * as tf from "@tensorflow/tfjs-core";
 * import { train } from "./mod.ts";
 * import { createNiN } from "./model.ts";
 *
 * const { weights } = await train({ workers: 2, epochs: 1 });
 * const model = createNiN();
 * let offset = 0;
 * model.setWeights(model.getWeights().map((w) => {
 *   const part = tf.tensor(weights.subarray(offset, offset + w.size), w.shape);
 *   offset += w.size;
 *   return part;
 * }));
 * ```
 *
 * @module
 */

export {
  createNiN,
  KERNEL_INITS,
  type KernelInit,
  MIN_INPUT_SIZE,
  type NiNOptions,
  ninSummary,
  NUM_CLASSES,
  resolveNiNOptions,
  setDropoutSeed,
  type StageSummary,
} from "./lib/model/nin.ts";
export {
  type LocalGradients,
  Replica,
  type ReplicaOptions,
  weightsChecksum,
} from "./lib/train/replica.ts";
export { sgdUpdate } from "./lib/train/optimizer.ts";
export { type BackendName, BACKENDS, type DeviceInfo, initBackend } from "./lib/train/backend.ts";
