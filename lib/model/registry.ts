/**
 * Which model a run trains, in a form every worker can rebuild in its own
 * thread. A tfjs model cannot cross a thread boundary, so it travels as one
 * of two descriptions:
 *
 * - **a model you built** (`train({ model })` with a tfjs `LayersModel`):
 *   its JSON topology goes to every worker, which rebuilds it with
 *   `tfl.models.modelFromJSON`, and its current weights become every
 *   replica's initial weights. The simplest form, for models made of tfjs's
 *   own layers — a JSON topology cannot describe code;
 * - **a module and the function it exports** (`{ module, export, options }`):
 *   every worker imports the module and calls the function with the options
 *   (JSON values, the run's seed among them). For anything code-defined:
 *   custom layers, weights loaded from elsewhere. A module is how Deno starts
 *   code in a worker anyway, and each worker builds the model with its own
 *   backend; rank 0's initial weights are broadcast to all.
 *
 * The built-in models are entries of {@linkcode MODELS}, found the same way.
 * A new built-in is its own file plus one entry there.
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import * as tfl from "npm:@tensorflow/tfjs-layers@4.22.0";
import { describeValue, UsageError } from "../errors.ts";
import { createLeNet, lenetLayerSizes } from "./lenet.ts";
import {
  createResNet18,
  resnet18LayerSizes,
  type ResNetOptions,
  resolveResNetOptions,
} from "./resnet.ts";
import {
  createNiN,
  type LayerSize,
  ninLayerSizes,
  type NiNOptions,
  resolveNiNOptions,
} from "./nin.ts";

/** A function that builds a model from its options; may be async. */
export type ModelFactory = (
  options: Record<string, unknown>,
) => tfl.LayersModel | Promise<tfl.LayersModel>;

/**
 * A user's model for `train()`: the module that builds it and the export to call.
 *
 * @example
 * ```ts ignore
 * // my_model.ts
 * import * as tfl from "npm:@tensorflow/tfjs-layers@4.22.0";
 * export function createModel(options: { seed: number; hidden: number }) {
 *   return tfl.sequential({ layers: [
 *     tfl.layers.flatten({ inputShape: [28, 28, 1] }),
 *     tfl.layers.dense({ units: options.hidden, activation: "relu" }),
 *     tfl.layers.dense({ units: 10 }),
 *   ] });
 * }
 * // train.ts
 * await train({ model: { module: new URL("./my_model.ts", import.meta.url), options: { hidden: 64 } } });
 * ```
 */
export interface ModelSpec {
  /** The module: a URL, or a file path (relative to the working directory). */
  module: URL | string;
  /** The exported factory's name. Default `"createModel"`. */
  export?: string;
  /**
   * The factory's options: JSON values only (they travel to every worker and
   * into checkpoints). `seed` is set to the run's seed unless given.
   */
  options?: Record<string, unknown>;
}

/**
 * A model built by the user: the parts of a tfjs `LayersModel` the trainer
 * uses to describe it (its topology) and to start from (its weights).
 */
export interface LayersModelLike {
  /** The model's topology as JSON (`model.toJSON(null, false)`). */
  toJSON(unused?: null, returnString?: boolean): unknown;
  /** The model's weights, in order. */
  getWeights(): { data(): Promise<ArrayLike<number>>; size: number }[];
}

/** A model as a run records it: resolved, JSON, identical on every rank and in checkpoints. */
export interface ModelConfig {
  /**
   * A key of {@linkcode MODELS}, `"custom"` for a user's module, or
   * `"layers"` for a user's model given as a `LayersModel` (its topology).
   */
  name: string;
  /** A `"layers"` model's JSON topology. */
  topology?: unknown;
  /** A custom model's module URL. */
  module?: string;
  /** A custom model's factory export. */
  export?: string;
  /** The factory's options, defaults filled in, `seed` included. */
  options: Record<string, unknown>;
}

/** One built-in model. */
export interface ModelEntry {
  /** Builds it from its resolved options. */
  create: ModelFactory;
  /** Checks the options and fills in defaults (throws a `UsageError`). */
  resolveOptions: (options: Record<string, unknown>) => Record<string, unknown>;
  /** The number of classes it tells apart (its logits) for resolved `options`. */
  classes: (options: Record<string, unknown>) => number;
  /** Its layers' sizes for resolved `options`, worked out without building it. */
  layerSizes: (options: Record<string, unknown>) => LayerSize[];
  /** Values of one input image for resolved `options` (after resizing). */
  inputValues: (options: Record<string, unknown>) => number;
  /** The training settings d2l uses for it, beneath the user's. */
  training: { lr?: number; batchSize?: number; epochs?: number };
}

/**
 * The built-in models. NiN trains with the library's defaults (d2l §7.3);
 * LeNet with d2l §7.6's lr 0.9 and batch 256, ResNet-18 with d2l §8.6's lr
 * 0.05 and batch 256, unless told otherwise.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MODELS } from "./registry.ts";
 *
 * assert.deepEqual(Object.keys(MODELS), ["nin", "lenet", "resnet18"]);
 * assert.equal(MODELS.lenet.training.lr, 0.9);
 * ```
 */
export const MODELS: Readonly<Record<ModelName, ModelEntry>> = {
  nin: {
    create: (options) => createNiN(options as NiNOptions),
    resolveOptions: (options) => {
      const known = ["inputSize", "width", "dropout", "init", "head", "seed"];
      const unknown = Object.keys(options).find((key) => !known.includes(key));
      if (unknown !== undefined) {
        throw new UsageError(
          `model: nin takes no option ${unknown} (it takes ${known.slice(0, -1).join(", ")})`,
        );
      }
      return resolveNiNOptions(options as NiNOptions);
    },
    classes: () => 10,
    layerSizes: (options) => ninLayerSizes(options as NiNOptions),
    inputValues: (options) => ((options as NiNOptions).inputSize ?? 224) ** 2,
    training: {},
  },
  lenet: {
    create: (options) => createLeNet(options),
    resolveOptions: (options) => {
      const unknown = Object.keys(options).find((key) => key !== "seed");
      if (unknown !== undefined) {
        throw new UsageError(`model: lenet takes no option ${unknown}`);
      }
      return { seed: options.seed ?? 0 };
    },
    classes: () => 10,
    layerSizes: () => lenetLayerSizes(),
    inputValues: () => 28 * 28,
    training: { lr: 0.9, batchSize: 256 },
  },
  resnet18: {
    create: (options) => createResNet18(options as ResNetOptions),
    resolveOptions: (options) => {
      const known = ["inputSize", "width", "channels", "classes", "seed"];
      const unknown = Object.keys(options).find((key) => !known.includes(key));
      if (unknown !== undefined) {
        throw new UsageError(
          `model: resnet18 takes no option ${unknown} (it takes ${known.slice(0, -1).join(", ")})`,
        );
      }
      return resolveResNetOptions(options as ResNetOptions);
    },
    classes: (options) => resolveResNetOptions(options as ResNetOptions).classes,
    layerSizes: (options) => resnet18LayerSizes(options as ResNetOptions),
    inputValues: (options) => {
      const o = resolveResNetOptions(options as ResNetOptions);
      return o.inputSize ** 2 * o.channels;
    },
    training: { lr: 0.05, batchSize: 256 },
  },
};

/** Names of the built-in models: d2l's NiN (§7.3), LeNet (§7.6) and ResNet-18 (§8.6). */
export type ModelName = "nin" | "lenet" | "resnet18";

/** ResNet-18 chosen with its shape options (see `ResNetOptions`; the seed is the run's). */
export type ResNetModel = { name: "resnet18" } & Omit<ResNetOptions, "seed">;

/** NiN chosen with its shape options (see `NiNOptions`; the seed is the run's). */
export type NiNModel = { name: "nin" } & Omit<NiNOptions, "seed">;

/**
 * A model as `train()` takes it: a built-in's name, or `{ name, …options }`
 * (NiN's shape options), or a model of your own — a tfjs `LayersModel`,
 * `{ topology }`, or a module and the function it exports.
 */
export type ModelChoice =
  | ModelName
  | NiNModel
  | { name: "lenet" }
  | ResNetModel
  | ModelSpec
  | LayersModelLike
  | { topology: unknown };

/**
 * The {@linkcode ModelConfig} of `model` (a {@linkcode ModelChoice}, or
 * undefined for NiN) with the run's `seed`. Throws a `UsageError` for an
 * unknown name, options a built-in does not take, a malformed spec or
 * options that are not plain JSON.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveModelConfig } from "./registry.ts";
 *
 * const config = resolveModelConfig("lenet", { seed: 3 });
 * assert.deepEqual(config, { name: "lenet", options: { seed: 3 } });
 * const nin = resolveModelConfig({ name: "nin", width: 0.5 }, { seed: 0 });
 * assert.equal(nin.options.width, 0.5);
 * const custom = resolveModelConfig({ module: "/models/mlp.ts" }, { seed: 0 });
 * assert.equal(custom.module, "file:///models/mlp.ts");
 * assert.equal(custom.export, "createModel");
 * ```
 */
export function resolveModelConfig(
  model: ModelChoice | undefined,
  options: { seed: number },
): ModelConfig {
  const seed = options.seed;
  const named = typeof model === "object" && model !== null && !isLayersModel(model) &&
      !("module" in model) && !("topology" in model)
    ? model as { name?: unknown }
    : undefined;
  if (model === undefined || typeof model === "string" || named !== undefined) {
    const name = model === undefined ? "nin" : typeof model === "string" ? model : named!.name;
    if (typeof name !== "string" || !Object.hasOwn(MODELS, name)) {
      throw new UsageError(
        `model must be one of ${Object.keys(MODELS).join(", ")}, a { name, … } of one, ` +
          `a LayersModel, { topology } or { module, export, options }; got ${
            describeValue(named ? named.name : model)
          }`,
      );
    }
    const { name: _, ...given } = (named ?? {}) as Record<string, unknown>;
    if ("seed" in given) {
      throw new UsageError("model.seed: the seed is the run's (the seed option)");
    }
    const entry = MODELS[name as ModelName];
    return { name, options: entry.resolveOptions({ ...given, seed }) };
  }
  if (typeof model !== "object" || model === null) {
    throw new UsageError(
      `model must be a name or { module, export, options }, got ${describeValue(model)}`,
    );
  }
  if (isLayersModel(model) || "topology" in model) {
    const topology = isLayersModel(model) ? model.toJSON(null, false) : model.topology;
    if (typeof topology !== "object" || topology === null) {
      throw new UsageError("model.topology must be a tfjs model's JSON topology");
    }
    return { name: "layers", topology: JSON.parse(JSON.stringify(topology)), options: {} };
  }
  const spec = model as ModelSpec;
  const unknown = Object.keys(spec).find((key) => !["module", "export", "options"].includes(key));
  if (unknown !== undefined) {
    throw new UsageError(
      `model: a module's model takes module, export and options, not ${unknown}` +
        " (give the factory's options in model.options)",
    );
  }
  const exportName = spec.export ?? "createModel";
  if (typeof exportName !== "string" || exportName === "") {
    throw new UsageError(
      `model.export must be a non-empty string, got ${describeValue(exportName)}`,
    );
  }
  const given = spec.options ?? {};
  if (typeof given !== "object" || given === null || Array.isArray(given)) {
    throw new UsageError(`model.options must be an object, got ${describeValue(given)}`);
  }
  const factoryOptions = { ...given, seed: given.seed ?? seed };
  let json: string;
  try {
    json = JSON.stringify(factoryOptions);
  } catch {
    json = "";
  }
  if (json === "" || !sameJson(factoryOptions, json)) {
    throw new UsageError(
      "model.options must hold JSON values only (numbers, strings, arrays, objects)",
    );
  }
  return {
    name: "custom",
    module: moduleUrl(spec.module),
    export: exportName,
    options: JSON.parse(json),
  };
}

/**
 * The {@linkcode ModelChoice} that selects `config` again (the seed is the
 * run's): a built-in as `{ name, …options }`, a module as its spec, a
 * topology as `{ topology }`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { modelChoice, resolveModelConfig } from "./registry.ts";
 *
 * const config = resolveModelConfig({ name: "nin", width: 0.5 }, { seed: 2 });
 * assert.deepEqual(resolveModelConfig(modelChoice(config), { seed: 2 }), config);
 * ```
 */
export function modelChoice(config: ModelConfig): ModelChoice {
  if (config.name === "custom") {
    return { module: config.module!, export: config.export, options: config.options };
  }
  if (config.name === "layers") return { topology: config.topology };
  const { seed: _, ...options } = config.options;
  return { name: config.name, ...options } as ModelChoice;
}

/**
 * A built-in model's layers, parameter count and input size, worked out
 * without building it; undefined for a model of the user's (known once built).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { modelSizes, resolveModelConfig } from "./registry.ts";
 *
 * assert.equal(modelSizes(resolveModelConfig("nin", { seed: 0 }))?.params, 1_992_166);
 * assert.equal(modelSizes({ name: "custom", module: "file:///m.ts", options: {} }), undefined);
 * ```
 */
export function modelSizes(
  config: ModelConfig,
): { layers: LayerSize[]; params: number; trainable: number; inputValues: number } | undefined {
  if (!Object.hasOwn(MODELS, config.name)) return undefined;
  const entry = MODELS[config.name as ModelName];
  const layers = entry.layerSizes(config.options);
  const params = layers.reduce((sum, layer) => sum + layer.params, 0);
  return {
    layers,
    params,
    trainable: params - layers.reduce((sum, layer) => sum + (layer.statistics ?? 0), 0),
    inputValues: entry.inputValues(config.options),
  };
}

/**
 * Builds the model `config` describes: imports its module, calls its factory
 * with its options and checks that the result is a model this trainer can
 * train — image input `[batch, height, width, channels]`, logits
 * `[batch, classes]` with at least 2 classes, trainable weights only.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { buildModel } from "./registry.ts";
 * import { initBackend } from "../train/shared/backend.ts";
 *
 * await initBackend("cpu");
 * const model = await buildModel({ name: "lenet", options: { seed: 0 } });
 * assert.equal(model.name, "lenet");
 * model.dispose();
 * ```
 */
export async function buildModel(config: ModelConfig): Promise<tfl.LayersModel> {
  if (config.name === "layers") {
    let model: tfl.LayersModel;
    try {
      model = await tfl.models.modelFromJSON({ modelTopology: config.topology as never });
    } catch (error) {
      throw new UsageError(`the model's topology cannot be rebuilt: ${firstLine(error)}`);
    }
    const problem = modelProblem(model);
    if (problem !== undefined) {
      model.dispose();
      throw new UsageError(`the model: ${problem}`);
    }
    return model;
  }
  // Only a "custom" model names a module to import; any other name must be a built-in's.
  let factory: ModelFactory;
  let what: string;
  if (config.name === "custom") {
    const url = config.module!;
    let module: Record<string, unknown>;
    try {
      module = await importModule(url);
    } catch (error) {
      throw new UsageError(`model module ${url} cannot be loaded: ${firstLine(error)}`);
    }
    const exported = module[config.export!];
    if (typeof exported !== "function") {
      throw new UsageError(`model module ${url} has no exported function ${config.export}`);
    }
    factory = exported as ModelFactory;
    what = `${config.export} of ${url}`;
  } else if (Object.hasOwn(MODELS, config.name)) {
    factory = MODELS[config.name as ModelName].create;
    what = config.name;
  } else {
    throw new UsageError(`unknown model ${describeValue(config.name)}`);
  }
  const model = await (factory as ModelFactory)(structuredClone(config.options));
  const problem = modelProblem(model);
  if (problem !== undefined) {
    (model as { dispose?: () => void })?.dispose?.();
    throw new UsageError(`${what}: ${problem}`);
  }
  return model;
}

/** Says why `model` cannot be trained here, or undefined. */
function modelProblem(model: unknown): string | undefined {
  const m = model as tfl.LayersModel;
  if (typeof m !== "object" || m === null || typeof m.apply !== "function" || !m.inputs) {
    return "did not return a tfjs LayersModel";
  }
  if (m.inputs.length !== 1 || m.outputs.length !== 1) {
    return "the model needs one input and one output";
  }
  const input = m.inputs[0].shape;
  if (input.length !== 4 || input.slice(1).some((d) => d === null)) {
    return `the input must be images [batch, height, width, channels], got [${input.join(", ")}]`;
  }
  const output = m.outputs[0].shape;
  if (output.length !== 2 || output[1] === null || output[1] < 2) {
    return `the output must be logits [batch, classes ≥ 2], got [${output.join(", ")}]`;
  }
  if (m.trainableWeights.length === 0) return "the model has no trainable weights";
  return undefined;
}

/**
 * Whether `model` is a built model (a tfjs `LayersModel` or alike), not a
 * description of one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isLayersModel } from "./registry.ts";
 *
 * assert.equal(isLayersModel({ module: "./m.ts" }), false);
 * ```
 */
export function isLayersModel(model: unknown): model is LayersModelLike {
  return typeof model === "object" && model !== null &&
    typeof (model as LayersModelLike).toJSON === "function" &&
    typeof (model as LayersModelLike).getWeights === "function";
}

/**
 * The current weights of a built model, flattened in `getWeights()` order:
 * the initial weights of every replica when `train()` is given the model.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createLeNet } from "./lenet.ts";
 * import { flatWeightsOf } from "./registry.ts";
 * import { initBackend } from "../train/shared/backend.ts";
 *
 * await initBackend("cpu");
 * const model = createLeNet();
 * assert.equal((await flatWeightsOf(model)).length, 61706);
 * model.dispose();
 * ```
 */
export async function flatWeightsOf(model: LayersModelLike): Promise<Float32Array<ArrayBuffer>> {
  const weights = model.getWeights();
  const flat = new Float32Array(weights.reduce((sum, w) => sum + w.size, 0));
  let offset = 0;
  for (const weight of weights) {
    const values = await weight.data();
    flat.set(values, offset);
    offset += values.length;
  }
  return flat;
}

/**
 * `import(url)` of a user's model module. The URL is absolute (a path is made
 * a `file:` URL first) and comes from the caller at run time, so there is no
 * import-map specifier in it for `deno publish` to rewrite; publish's
 * analyser warns about every `import()` of a non-literal all the same, hence
 * the `Function`, whose body it does not read.
 */
const importModule = (url: string): Promise<Record<string, unknown>> =>
  // Made when a custom model is built, not with this module: a browser tab's page forbids
  // evaluating strings (its content security policy), and builds built-in models only.
  (new Function("url", "return import(url)") as (url: string) => Promise<Record<string, unknown>>)(
    url,
  );

/**
 * A custom model's module as a URL: a path is resolved against the working
 * directory. (Not through Node's path modules: a browser tab builds
 * built-in models from this same module, and has none.)
 */
function moduleUrl(module: URL | string): string {
  if (module instanceof URL) return module.href;
  if (typeof module !== "string" || module === "") {
    throw new UsageError(`model.module must be a URL or a path, got ${describeValue(module)}`);
  }
  if (/^[a-z][a-z0-9+.-]*:/i.test(module) && !/^[a-z]:[\\/]/i.test(module)) return module;
  const windows = /^[a-z]:[\\/]/i.test(module) || Deno.build.os === "windows";
  const slashed = windows ? module.replaceAll("\\", "/") : module;
  const absolute = /^([a-z]:)?\//i.test(slashed)
    ? slashed
    : `${Deno.cwd().replaceAll("\\", "/")}/${slashed}`;
  const url = new URL("file:///");
  // The setter escapes what a path may hold but a URL may not (`#`, `?`, spaces); `%` and
  // (outside Windows) `\\` are escaped first, as `pathToFileURL` does.
  url.pathname = (/^[a-z]:/i.test(absolute) ? "/" : "") +
    absolute.replaceAll("%", "%25").replaceAll("\\", "%5C");
  return url.href;
}

/** Whether `value` survives a JSON round trip unchanged (no functions, typed arrays, NaN). */
function sameJson(value: unknown, json: string): boolean {
  const back = JSON.parse(json);
  const equal = (a: unknown, b: unknown): boolean => {
    if (typeof a !== typeof b) return false;
    if (typeof a !== "object" || a === null || b === null) return Object.is(a, b);
    if (Array.isArray(a) !== Array.isArray(b)) return false;
    if (!Array.isArray(a) && Object.getPrototypeOf(a) !== Object.prototype) return false;
    const ka = Object.keys(a as object), kb = Object.keys(b as object);
    return ka.length === kb.length &&
      ka.every((k) => equal((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
  };
  return equal(value, back);
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0];
}

/**
 * Sets all weights of `model` from one flat vector in `model.getWeights()` order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { setFlatWeights } from "./registry.ts";
 * import { createNiN } from "./nin.ts";
 * import { initBackend } from "../train/shared/backend.ts";
 *
 * await initBackend("cpu");
 * const model = createNiN({ inputSize: 67, width: 0.125 });
 * setFlatWeights(model, new Float32Array(model.countParams()).fill(0.5));
 * assert.equal((await model.getWeights()[0].data())[0], 0.5);
 * model.dispose();
 * ```
 */
export function setFlatWeights(model: tfl.LayersModel, weights: Float32Array): void {
  const total = model.countParams();
  if (weights.length !== total) {
    throw new RangeError(`expected ${total} weights, got ${weights.length}`);
  }
  let offset = 0;
  const tensors = model.getWeights().map((w) => {
    const part = tf.tensor(weights.subarray(offset, offset + w.size), w.shape, "float32");
    offset += w.size;
    return part;
  });
  model.setWeights(tensors);
  tf.dispose(tensors);
}
