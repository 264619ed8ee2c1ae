/**
 * ResNet-18 (He et al., 2016) as built in d2l.ai §8.6 for Fashion-MNIST:
 * a 7×7/2 convolution with 64 channels, batch normalisation, ReLU and 3×3/2
 * max pooling; four stages of two residual blocks (64, 128, 256, 512
 * channels, the last three starting with a stride of 2 and a 1×1
 * convolution on the shortcut); global average pooling and a dense layer.
 *
 * PyTorch pads symmetrically where tfjs's `"same"` pads the bottom and right
 * more, so every padded layer here is an explicit zero padding followed by a
 * `"valid"` one: the windows sit where d2l's do. Zero padding before the
 * max pooling equals PyTorch's −∞ padding there, because it follows a ReLU.
 *
 * @module
 */

import * as tfl from "npm:@tensorflow/tfjs-layers@4.22.0";
import { describeValue, UsageError } from "../errors.ts";
import { mixSeed } from "../util/random.ts";
import { type LayerSize, scaledChannels as scaled } from "./nin.ts";

/** Options for {@linkcode createResNet18}. The defaults are d2l's configuration. */
export interface ResNetOptions {
  /** Side of the square input image after resizing. Default 96 (d2l's); at least 28. */
  inputSize?: number;
  /** Multiplier on the 64/128/256/512 channels. Default 1. */
  width?: number;
  /** Channels of the input images: 1 (Fashion-MNIST, the default) or 3 (CIFAR-10). */
  channels?: number;
  /** Number of classes. Default 10. */
  classes?: number;
  /** Seed of the weight initialisation. Default 0. */
  seed?: number;
}

/** The smallest input side: Fashion-MNIST's own 28 px leave the last stage 1×1 pixel. */
export const RESNET_MIN_INPUT_SIZE = 28;

/**
 * Fills in the defaults of `options` and checks them; throws a `UsageError`
 * naming the first bad one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveResNetOptions } from "./resnet.ts";
 *
 * assert.deepEqual(resolveResNetOptions({}), {
 *   inputSize: 96, width: 1, channels: 1, classes: 10, seed: 0,
 * });
 * assert.throws(() => resolveResNetOptions({ inputSize: 20 }), /at least 28, got 20/);
 * ```
 */
export function resolveResNetOptions(options: ResNetOptions = {}): Required<ResNetOptions> {
  const resolved = {
    inputSize: options.inputSize ?? 96,
    width: options.width ?? 1,
    channels: options.channels ?? 1,
    classes: options.classes ?? 10,
    seed: options.seed ?? 0,
  };
  if (!Number.isInteger(resolved.inputSize) || resolved.inputSize < RESNET_MIN_INPUT_SIZE) {
    throw new UsageError(
      `input size must be an integer of at least ${RESNET_MIN_INPUT_SIZE}, got ${
        describeValue(resolved.inputSize)
      }`,
    );
  }
  if (typeof resolved.width !== "number" || !(resolved.width > 0) || !isFinite(resolved.width)) {
    throw new UsageError(`width must be a positive number, got ${describeValue(resolved.width)}`);
  }
  if (resolved.channels !== 1 && resolved.channels !== 3) {
    throw new UsageError(`channels must be 1 or 3, got ${describeValue(resolved.channels)}`);
  }
  if (!Number.isInteger(resolved.classes) || resolved.classes < 2) {
    throw new UsageError(
      `classes must be an integer of at least 2, got ${describeValue(resolved.classes)}`,
    );
  }
  if (!Number.isInteger(resolved.seed)) {
    throw new UsageError(`seed must be an integer, got ${describeValue(resolved.seed)}`);
  }
  return resolved;
}

/** Channels of the stem and of the four stages at width 1. */
const STAGES = [64, 128, 256, 512] as const;

/**
 * Builds d2l's ResNet-18. Kernels are Glorot-uniform (d2l's
 * `xavier_uniform_`), convolution and dense biases zero; batch normalisation
 * uses PyTorch's momentum (0.1, which tfjs calls 0.9) and epsilon (1e-5). The
 * weights depend only on the options. At width 1 for 1-channel input it has
 * 11,178,378 trainable parameters, as d2l's.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createResNet18 } from "./resnet.ts";
 * import { initBackend } from "../train/shared/backend.ts";
 *
 * await initBackend("cpu");
 * const model = createResNet18({ inputSize: 32, width: 0.125 });
 * assert.equal(model.outputs[0].shape.join(), ",10");
 * model.dispose();
 * ```
 */
export function createResNet18(options: ResNetOptions = {}): tfl.LayersModel {
  const o = resolveResNetOptions(options);
  let layerIndex = 0;
  const init = () => tfl.initializers.glorotUniform({ seed: mixSeed([o.seed, layerIndex++]) });
  const conv = (name: string, filters: number, kernelSize: number, strides: number) =>
    tfl.layers.conv2d({
      name,
      filters,
      kernelSize,
      strides,
      padding: "valid",
      kernelInitializer: init(),
    });
  const norm = (name: string) =>
    tfl.layers.batchNormalization({ name, momentum: 0.9, epsilon: 1e-5 });
  const pad = (name: string, by: number) => tfl.layers.zeroPadding2d({ name, padding: by });
  const relu = (name: string) => tfl.layers.reLU({ name });
  type T = tfl.SymbolicTensor;
  const chain = (x: T, layers: tfl.layers.Layer[]): T =>
    layers.reduce((y, layer) => layer.apply(y) as T, x);

  const input = tfl.input({ shape: [o.inputSize, o.inputSize, o.channels], name: "images" });
  const stem = scaled(STAGES[0], o.width);
  let x = chain(input, [
    pad("b1_pad", 3),
    conv("b1_conv", stem, 7, 2),
    norm("b1_bn"),
    relu("b1_relu"),
    pad("b1_pool_pad", 1),
    tfl.layers.maxPooling2d({ name: "b1_pool", poolSize: 3, strides: 2, padding: "valid" }),
  ]);
  STAGES.forEach((channels, stage) => {
    const filters = scaled(channels, o.width);
    for (let block = 0; block < 2; block++) {
      const name = `b${stage + 2}_${block + 1}`;
      const down = stage > 0 && block === 0;
      const strides = down ? 2 : 1;
      let y = chain(x, [
        pad(`${name}_pad1`, 1),
        conv(`${name}_conv1`, filters, 3, strides),
        norm(`${name}_bn1`),
        relu(`${name}_relu1`),
        pad(`${name}_pad2`, 1),
        conv(`${name}_conv2`, filters, 3, 1),
        norm(`${name}_bn2`),
      ]);
      const shortcut = down ? conv(`${name}_conv3`, filters, 1, 2).apply(x) as T : x;
      y = tfl.layers.add({ name: `${name}_add` }).apply([y, shortcut]) as T;
      x = relu(`${name}_relu2`).apply(y) as T;
    }
  });
  const output = chain(x, [
    tfl.layers.globalAveragePooling2d({ name: "pool" }),
    tfl.layers.dense({ name: "fc", units: o.classes, kernelInitializer: init() }),
  ]);
  return tfl.model({ name: "resnet18", inputs: input, outputs: output });
}

/**
 * ResNet-18's layers as {@linkcode createResNet18} builds them, sized by
 * arithmetic alone (see `ninLayerSizes`). `params` counts every weight,
 * batch normalisation's moving statistics included (what a checkpoint holds).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resnet18LayerSizes } from "./resnet.ts";
 *
 * const layers = resnet18LayerSizes({});
 * const statistics = 2 * (64 + 2 * 2 * (64 + 128 + 256 + 512)); // 2 per channel of 17 BNs
 * assert.equal(layers.reduce((sum, l) => sum + l.params, 0) - statistics, 11_178_378);
 * ```
 */
export function resnet18LayerSizes(options: ResNetOptions): LayerSize[] {
  const o = resolveResNetOptions(options);
  const half = (n: number) => Math.ceil(n / 2); // every stride-2 layer here, padded as d2l pads
  const layers: LayerSize[] = [];
  const convolution = (name: string, cin: number, cout: number, k: number, side: number) =>
    layers.push({ name, outputValues: side * side * cout, params: k * k * cin * cout + cout });
  const normalisation = (name: string, c: number, side: number) =>
    layers.push({ name, outputValues: side * side * c, params: 4 * c, statistics: 2 * c });
  let side = half(o.inputSize);
  let cin = scaled(STAGES[0], o.width);
  convolution("b1_conv", o.channels, cin, 7, side);
  normalisation("b1_bn", cin, side);
  side = half(side);
  layers.push({ name: "b1_pool", outputValues: side * side * cin, params: 0 });
  STAGES.forEach((channels, stage) => {
    const cout = scaled(channels, o.width);
    for (let block = 0; block < 2; block++) {
      const name = `b${stage + 2}_${block + 1}`;
      const down = stage > 0 && block === 0;
      if (down) side = half(side);
      convolution(`${name}_conv1`, cin, cout, 3, side);
      normalisation(`${name}_bn1`, cout, side);
      convolution(`${name}_conv2`, cout, cout, 3, side);
      normalisation(`${name}_bn2`, cout, side);
      if (down) convolution(`${name}_conv3`, cin, cout, 1, side);
      layers.push({ name: `${name}_add`, outputValues: side * side * cout, params: 0 });
      cin = cout;
    }
  });
  layers.push({ name: "pool", outputValues: cin, params: 0 });
  layers.push({ name: "fc", outputValues: o.classes, params: cin * o.classes + o.classes });
  return layers;
}
