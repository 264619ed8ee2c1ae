/**
 * The TensorFlow.js side of the library: the built-in models (d2l's NiN and
 * LeNet), building any model a run describes (`buildModel`), one replica's
 * training step, exporting and evaluating — for single-process use,
 * inference with trained weights, or custom training loops. Its signatures use TensorFlow.js types, which is why
 * it is a separate entry point from `mod.ts`.
 *
 * @example Load the weights `train()` returns into a model for inference
 * ```ts ignore
 * import { train } from "./mod.ts";
 * import { createNiN, setFlatWeights } from "./model.ts";
 *
 * const { weights } = await train({ workers: 2, epochs: 1 });
 * const model = createNiN();
 * setFlatWeights(model, weights);
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
} from "./lib/train/worker/replica.ts";
export { buildModel, type ModelFactory } from "./lib/model/registry.ts";
export { createLeNet, type LeNetOptions } from "./lib/model/lenet.ts";
export {
  exportLayersModel,
  loadLayersModelFromDir,
  setFlatWeights,
  WEIGHTS_FILE,
} from "./lib/model/export.ts";
export { evaluateModel, type Evaluation } from "./lib/train/coordinator/evaluate.ts";
