/**
 * The TensorFlow.js side of the library: the built-in models (d2l's NiN,
 * LeNet and ResNet-18), building any model a run describes, loading trained weights into a
 * model, exporting it in TensorFlow.js' LayersModel format, and evaluating it.
 * Its signatures use TensorFlow.js types, which is why it is an entry point of
 * its own (and why `deno doc --lint` leaves it out: it would ask for JSDoc on
 * TensorFlow.js' own classes).
 *
 * @example Load the weights `train()` returns into a model, and evaluate it
 * ```ts ignore
 * import { train } from "./mod.ts";
 * import { loadFashionMNIST } from "./data.ts";
 * import { buildModel, evaluateModel, initBackend, setFlatWeights } from "./model.ts";
 * import { resolveTrainOptions } from "./internal.ts";
 *
 * const options = { preset: "quick" } as const;
 * const { weights } = await train(options);
 * await initBackend("cpu");
 * const model = await buildModel(resolveTrainOptions(options).model);
 * setFlatWeights(model, weights);
 * const { test } = await loadFashionMNIST();
 * console.log((await evaluateModel(model, test)).accuracy);
 * ```
 *
 * @module
 */

export {
  createNiN,
  type NiNOptions,
  NUM_CLASSES,
  type StageSummary,
  stageSummary,
} from "./lib/model/nin.ts";
export { createLeNet, type LeNetOptions } from "./lib/model/lenet.ts";
export { createResNet18, type ResNetOptions } from "./lib/model/resnet.ts";
export { buildModel, type ModelFactory } from "./lib/model/registry.ts";
export {
  exportLayersModel,
  loadLayersModelFromDir,
  setFlatWeights,
  WEIGHTS_FILE,
} from "./lib/model/export.ts";
export { evaluateModel, type Evaluation } from "./lib/train/coordinator/evaluate.ts";
export { initBackend } from "./lib/train/shared/backend.ts";
export type { BackendName, DeviceInfo, KernelInit, ModelConfig, Normalization } from "./mod.ts";
export type { Dataset } from "./data.ts";
