/**
 * d2l.ai §7.6's LeNet-5: two sigmoid convolutions with average pooling, then
 * three dense layers, on 28×28 single-channel images. Small enough to train
 * to useful accuracy in about a minute on a CPU.
 *
 * @module
 */

import * as tfl from "npm:@tensorflow/tfjs-layers@4.22.0";
import { mixSeed } from "../util/random.ts";

/** Options for {@linkcode createLeNet}. */
export interface LeNetOptions {
  /** Seed of the weight initialisation. Default 0. */
  seed?: number;
}

/**
 * Builds d2l's LeNet: conv 5×5 ×6 (padding 2), sigmoid, 2×2 average pool;
 * conv 5×5 ×16, sigmoid, 2×2 average pool; dense 120, sigmoid; dense 84,
 * sigmoid; dense 10 (logits). Kernels are Glorot-uniform (d2l's
 * `xavier_uniform_`), biases zero; the weights depend only on `seed`.
 * 61,706 parameters.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createLeNet } from "./lenet.ts";
 * import { initBackend } from "../train/shared/backend.ts";
 *
 * await initBackend("cpu");
 * const model = createLeNet({ seed: 1 });
 * assert.equal(model.outputs[0].shape.join(), ",10");
 * assert.equal(model.countParams(), 61706);
 * model.dispose();
 * ```
 */
export function createLeNet(options: LeNetOptions = {}): tfl.Sequential {
  const seed = options.seed ?? 0;
  let layerIndex = 0;
  const init = () => tfl.initializers.glorotUniform({ seed: mixSeed([seed, layerIndex++]) });
  return tfl.sequential({
    name: "lenet",
    layers: [
      tfl.layers.conv2d({
        name: "conv1",
        inputShape: [28, 28, 1],
        filters: 6,
        kernelSize: 5,
        padding: "same",
        activation: "sigmoid",
        kernelInitializer: init(),
      }),
      tfl.layers.averagePooling2d({ name: "pool1", poolSize: 2, strides: 2 }),
      tfl.layers.conv2d({
        name: "conv2",
        filters: 16,
        kernelSize: 5,
        activation: "sigmoid",
        kernelInitializer: init(),
      }),
      tfl.layers.averagePooling2d({ name: "pool2", poolSize: 2, strides: 2 }),
      tfl.layers.flatten({ name: "flatten" }),
      tfl.layers.dense({
        name: "fc1",
        units: 120,
        activation: "sigmoid",
        kernelInitializer: init(),
      }),
      tfl.layers.dense({
        name: "fc2",
        units: 84,
        activation: "sigmoid",
        kernelInitializer: init(),
      }),
      tfl.layers.dense({ name: "fc3", units: 10, kernelInitializer: init() }),
    ],
  });
}

/**
 * LeNet's layers as {@linkcode createLeNet} builds them, sized by arithmetic
 * alone (see `ninLayerSizes`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lenetLayerSizes } from "./lenet.ts";
 *
 * assert.equal(lenetLayerSizes().reduce((sum, l) => sum + l.params, 0), 61_706);
 * ```
 */
export function lenetLayerSizes(): { name: string; outputValues: number; params: number }[] {
  return [
    { name: "conv1", outputValues: 28 * 28 * 6, params: 5 * 5 * 1 * 6 + 6 },
    { name: "pool1", outputValues: 14 * 14 * 6, params: 0 },
    { name: "conv2", outputValues: 10 * 10 * 16, params: 5 * 5 * 6 * 16 + 16 },
    { name: "pool2", outputValues: 5 * 5 * 16, params: 0 },
    { name: "fc1", outputValues: 120, params: 400 * 120 + 120 },
    { name: "fc2", outputValues: 84, params: 120 * 84 + 84 },
    { name: "fc3", outputValues: 10, params: 84 * 10 + 10 },
  ];
}
