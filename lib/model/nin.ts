/**
 * Network in Network (Lin et al., 2013) as built in d2l.ai §7.3, for 1-channel
 * input and 10 classes.
 *
 * `nin_block(out, k, stride, pad)` is a k×k convolution followed by two 1×1
 * convolutions, each with ReLU. The network is four such blocks with 3×3/2
 * max pooling between them, dropout before the last block, whose 10 channels
 * are averaged over space into the class scores.
 *
 * @module
 */

import * as tfl from "npm:@tensorflow/tfjs-layers@4.22.0";
import { describeValue, UsageError } from "../errors.ts";
import { mixSeed } from "../util/random.ts";

/** Options for {@linkcode createNiN}. The defaults are d2l's configuration. */
export interface NiNOptions {
  /** Side of the square input image after resizing. Default 224; at least 67. */
  inputSize?: number;
  /** Multiplier on the 96/256/384 channels of the first three blocks. Default 1. */
  width?: number;
  /** Dropout rate before the last block. Default 0.5; 0 turns it off. */
  dropout?: number;
  /** Seed of the weight initialisation. Default 0. */
  seed?: number;
  /**
   * Kernel initialisation: `"he-normal"` (default; Kaiming normal, fan-in,
   * as PyTorch's `kaiming_normal_`) or `"glorot-uniform"` (tfjs' and Keras'
   * default, for comparison).
   */
  init?: KernelInit;
  /**
   * The class scores' layer (the last 1×1 convolution): `"random"` (default;
   * initialised as every other layer) or `"zero"`: zero weights and a bias of
   * {@linkcode ZERO_HEAD_BIAS}, so every class starts with the same positive
   * score for every image, and its ReLU lets every class's gradient through
   * from the first step. With `"random"`, a class whose score is negative for
   * every image at the start gets no gradient at all — how small NiNs stall
   * at chance accuracy (see the README's initialisation study).
   */
  head?: HeadInit;
}

/** Initialisations of NiN's class-score layer that {@linkcode createNiN} offers. */
export type HeadInit = "random" | "zero";

/**
 * The values of {@linkcode HeadInit}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { HEAD_INITS } from "./nin.ts";
 *
 * assert.deepEqual(HEAD_INITS, ["random", "zero"]);
 * ```
 */
export const HEAD_INITS: readonly HeadInit[] = ["random", "zero"];

/**
 * Every class score's initial value with `head: "zero"`: the bias of the last
 * 1×1 convolution, whose weights start at zero. Positive, so that the layer's
 * ReLU passes gradient for every class.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ZERO_HEAD_BIAS } from "./nin.ts";
 *
 * assert.ok(ZERO_HEAD_BIAS > 0);
 * ```
 */
export const ZERO_HEAD_BIAS = 0.1;

/** Kernel initialisations {@linkcode createNiN} offers. */
export type KernelInit = "he-normal" | "glorot-uniform";

/**
 * The values of {@linkcode KernelInit}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { KERNEL_INITS } from "./nin.ts";
 *
 * assert.ok(KERNEL_INITS.includes("he-normal"));
 * ```
 */
export const KERNEL_INITS: readonly KernelInit[] = ["he-normal", "glorot-uniform"];

/**
 * Smallest input side for which every pooling stage still has output.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MIN_INPUT_SIZE, resolveNiNOptions } from "./nin.ts";
 *
 * assert.throws(() => resolveNiNOptions({ inputSize: MIN_INPUT_SIZE - 1 }));
 * ```
 */
export const MIN_INPUT_SIZE = 67;

/**
 * Number of output classes (Fashion-MNIST).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NUM_CLASSES } from "./nin.ts";
 *
 * assert.equal(NUM_CLASSES, 10);
 * ```
 */
export const NUM_CLASSES = 10;

/**
 * Fills in defaults and validates NiN options, throwing a
 * {@linkcode UsageError} for values the network cannot be built with.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveNiNOptions } from "./nin.ts";
 *
 * const options = resolveNiNOptions({ width: 0.25 });
 * assert.ok(options.inputSize === 224 && options.dropout === 0.5);
 * ```
 */
export function resolveNiNOptions(options: NiNOptions = {}): Required<NiNOptions> {
  const resolved = {
    inputSize: options.inputSize ?? 224,
    width: options.width ?? 1,
    dropout: options.dropout ?? 0.5,
    seed: options.seed ?? 0,
    init: options.init ?? "he-normal",
    head: options.head ?? "random",
  };
  if (!Number.isInteger(resolved.inputSize) || resolved.inputSize < MIN_INPUT_SIZE) {
    throw new UsageError(
      `input size must be an integer of at least ${MIN_INPUT_SIZE}, got ${
        describeValue(resolved.inputSize)
      }`,
    );
  }
  if (typeof resolved.width !== "number" || !(resolved.width > 0) || !isFinite(resolved.width)) {
    throw new UsageError(`width must be a positive number, got ${describeValue(resolved.width)}`);
  }
  if (typeof resolved.dropout !== "number" || !(resolved.dropout >= 0 && resolved.dropout < 1)) {
    throw new UsageError(
      `dropout must be a number in [0, 1), got ${describeValue(resolved.dropout)}`,
    );
  }
  if (!KERNEL_INITS.includes(resolved.init)) {
    throw new UsageError(
      `init must be one of ${KERNEL_INITS.join(", ")}, got ${describeValue(resolved.init)}`,
    );
  }
  if (!HEAD_INITS.includes(resolved.head)) {
    throw new UsageError(
      `head must be one of ${HEAD_INITS.join(", ")}, got ${describeValue(resolved.head)}`,
    );
  }
  if (!Number.isInteger(resolved.seed)) {
    throw new UsageError(`seed must be an integer, got ${describeValue(resolved.seed)}`);
  }
  return resolved;
}

/**
 * Builds the NiN model with He-normal (Kaiming, fan-in) initialised kernels
 * (unless `options.init` says otherwise) and zero biases (but see
 * `options.head`). With the default options it has 1,992,166 parameters and takes
 * `[batch, 224, 224, 1]` images.
 *
 * He-normal is used instead of tfjs' default Glorot-uniform because NiN at
 * learning rate 0.1 often stalls at chance accuracy with Glorot; see the
 * README for the measurement.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createNiN } from "./nin.ts";
 * import { initBackend } from "../train/shared/backend.ts";
 *
 * await initBackend("cpu");
 * const model = createNiN({ inputSize: 67, width: 0.125 });
 * assert.ok(model.outputs[0].shape.join() === ",10");
 * model.dispose();
 * ```
 */
export function createNiN(options: NiNOptions = {}): tfl.Sequential {
  const { inputSize, width, dropout, seed, init, head } = resolveNiNOptions(options);
  const channels = (c: number) => scaledChannels(c, width);
  const model = tfl.sequential({ name: "nin" });
  let layerIndex = 0;
  let inChannels = 1;
  const conv = (name: string, filters: number, kernel: number, stride: number, pad: 0 | 1 | 2) => {
    const fanIn = kernel * kernel * inChannels;
    const layerSeed = mixSeed([seed, layerIndex++]);
    const zero = head === "zero" && name === "nin4_mlp2";
    model.add(tfl.layers.conv2d({
      name,
      filters,
      kernelSize: kernel,
      strides: stride,
      // For stride 1, "same" padding is exactly d2l's padding of (k-1)/2.
      padding: pad === 0 ? "valid" : "same",
      activation: "relu",
      kernelInitializer: zero
        ? "zeros"
        : init === "he-normal"
        ? tfl.initializers.randomNormal({ mean: 0, stddev: Math.sqrt(2 / fanIn), seed: layerSeed })
        : tfl.initializers.glorotUniform({ seed: layerSeed }),
      biasInitializer: zero ? tfl.initializers.constant({ value: ZERO_HEAD_BIAS }) : "zeros",
      ...(model.layers.length === 0 ? { inputShape: [inputSize, inputSize, 1] } : {}),
    }));
    inChannels = filters;
  };
  const ninBlock = (
    block: number,
    filters: number,
    kernel: number,
    stride: number,
    pad: 0 | 1 | 2,
  ) => {
    conv(`nin${block}_conv`, filters, kernel, stride, pad);
    conv(`nin${block}_mlp1`, filters, 1, 1, 0);
    conv(`nin${block}_mlp2`, filters, 1, 1, 0);
  };
  const maxPool = (index: number) =>
    model.add(tfl.layers.maxPooling2d({ name: `maxpool${index}`, poolSize: 3, strides: 2 }));

  ninBlock(1, channels(96), 11, 4, 0);
  maxPool(1);
  ninBlock(2, channels(256), 5, 1, 2);
  maxPool(2);
  ninBlock(3, channels(384), 3, 1, 1);
  maxPool(3);
  model.add(tfl.layers.dropout({ name: "dropout", rate: dropout }));
  ninBlock(4, NUM_CLASSES, 3, 1, 1);
  const side = model.outputs[0].shape[1] as number;
  model.add(tfl.layers.averagePooling2d({ name: "avgpool", poolSize: side, strides: side }));
  model.add(tfl.layers.flatten({ name: "flatten" }));
  return model;
}

/** One row of {@linkcode stageSummary}: a stage (a NiN or ResNet block) or a single layer. */
export interface StageSummary {
  /**
   * Stage name: the part of its layers' names before the first `_` (NiN's
   * `nin1` … `nin4`, `maxpool1`, …; ResNet-18's `b1` … `b5`, `pool`, `fc`).
   */
  name: string;
  /** Output shape without the batch dimension, e.g. `[54, 54, 96]`. */
  outputShape: number[];
  /** Number of trainable parameters in the stage (batch-normalisation statistics not counted). */
  params: number;
}

/**
 * Output shape and parameter count of each stage of a built-in model, grouping
 * the layers of a block as d2l prints them (NiN's three convolutions, a
 * ResNet stage's residual blocks). The input layer is not a row.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createNiN, stageSummary } from "./nin.ts";
 * import { initBackend } from "../train/shared/backend.ts";
 *
 * await initBackend("cpu");
 * const model = createNiN();
 * const rows = stageSummary(model);
 * assert.ok(rows[0].name === "nin1" && rows[0].outputShape.join("x") === "54x54x96");
 * model.dispose();
 * ```
 */
export function stageSummary(model: tfl.LayersModel): StageSummary[] {
  const rows: StageSummary[] = [];
  for (const layer of model.layers) {
    if (layer.getClassName() === "InputLayer") continue;
    const name = layer.name.split("_")[0];
    const shape = (layer.outputShape as (number | null)[]).slice(1) as number[];
    const params = trainableParams(layer);
    const last = rows.at(-1);
    if (last !== undefined && last.name === name) {
      last.outputShape = shape;
      last.params += params;
    } else {
      rows.push({ name, outputShape: shape, params });
    }
  }
  return rows;
}

/**
 * Sets the seed of the model's dropout masks for the next training forward
 * pass, so that dropout is reproducible. Different seeds give different masks.
 *
 * tfjs' Dropout layer draws its mask from its `seed` field when one is set; it
 * is not part of the public typings, hence the cast.
 *
 * @example
 * ```ts
 * import { createNiN, setDropoutSeed } from "./nin.ts";
 * import { initBackend } from "../train/shared/backend.ts";
 *
 * await initBackend("cpu");
 * const model = createNiN({ inputSize: 67, width: 0.125 });
 * setDropoutSeed(model, 1234);
 * model.dispose();
 * ```
 */
export function setDropoutSeed(model: tfl.LayersModel, seed: number): void {
  for (const layer of model.layers) {
    if (layer.getClassName() === "Dropout") (layer as unknown as { seed: number }).seed = seed;
  }
}

/**
 * A built-in's channel count `c` at width multiplier `width`: rounded, at
 * least 1 (NiN's blocks, ResNet-18's stages).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { scaledChannels } from "./nin.ts";
 *
 * assert.deepEqual([scaledChannels(96, 0.125), scaledChannels(10, 0.01)], [12, 1]);
 * ```
 */
export function scaledChannels(c: number, width: number): number {
  return Math.max(1, Math.round(c * width));
}

/**
 * The number of trainable parameters of a model or layer: what PyTorch counts
 * (batch-normalisation statistics and frozen weights left out).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { trainableParams } from "./nin.ts";
 *
 * assert.equal(trainableParams({ trainableWeights: [{ shape: [3, 4] }, { shape: [4] }] }), 16);
 * ```
 */
export function trainableParams(
  model: { trainableWeights: readonly { shape: readonly (number | null)[] }[] },
): number {
  return model.trainableWeights.reduce(
    (sum, w) => sum + w.shape.reduce((a: number, b) => a * (b as number), 1),
    0,
  );
}

/** The size of one layer of a model, worked out without building it. */
export interface LayerSize {
  /** The layer's name, as the built model names it. */
  name: string;
  /** Values in its output for one image. */
  outputValues: number;
  /** Its weights, batch-normalisation statistics included. */
  params: number;
  /** How many of them are batch-normalisation statistics (not trained). Default 0. */
  statistics?: number;
}

/**
 * NiN's layers as {@linkcode createNiN} builds them, sized by arithmetic
 * alone: what a configuration costs can be known before anything is
 * allocated (a width of 50 is 11 GB of weights; an input of 100,000 px, 240
 * GB of activations per image).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ninLayerSizes } from "./nin.ts";
 *
 * const layers = ninLayerSizes({});
 * assert.equal(layers.reduce((sum, l) => sum + l.params, 0), 1_992_166);
 * assert.equal(layers[0].outputValues, 54 * 54 * 96);
 * ```
 */
export function ninLayerSizes(options: NiNOptions): LayerSize[] {
  const inputSize = options.inputSize ?? 224;
  const width = options.width ?? 1;
  const channels = (c: number) => scaledChannels(c, width);
  const layers: LayerSize[] = [];
  let side = inputSize;
  let inChannels = 1;
  const conv = (name: string, filters: number, kernel: number, stride: number, same: boolean) => {
    side = same ? Math.ceil(side / stride) : Math.floor((side - kernel) / stride) + 1;
    layers.push({
      name,
      outputValues: side * side * filters,
      params: kernel * kernel * inChannels * filters + filters,
    });
    inChannels = filters;
  };
  const block = (b: number, filters: number, kernel: number, stride: number, same: boolean) => {
    conv(`nin${b}_conv`, filters, kernel, stride, same);
    conv(`nin${b}_mlp1`, filters, 1, 1, false);
    conv(`nin${b}_mlp2`, filters, 1, 1, false);
  };
  const pool = (index: number) => {
    side = Math.floor((side - 3) / 2) + 1;
    layers.push({ name: `maxpool${index}`, outputValues: side * side * inChannels, params: 0 });
  };
  block(1, channels(96), 11, 4, false);
  pool(1);
  block(2, channels(256), 5, 1, true);
  pool(2);
  block(3, channels(384), 3, 1, true);
  pool(3);
  layers.push({ name: "dropout", outputValues: side * side * inChannels, params: 0 });
  block(4, NUM_CLASSES, 3, 1, true);
  layers.push({ name: "avgpool", outputValues: NUM_CLASSES, params: 0 });
  return layers;
}
