/**
 * One model replica: turns a batch of raw images into a flat gradient, and
 * applies an averaged gradient with its optimizer. It knows nothing about workers or
 * message channels, so the same code runs inside a worker, in a test, or in a
 * single-process loop.
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type * as tfl from "npm:@tensorflow/tfjs-layers@4.22.0";
import type { Batch } from "../../data/batches.ts";
import type { Normalization } from "../../data/dataset.ts";
import { toModelInput } from "../shared/model_input.ts";
import { setFlatWeights } from "../../model/registry.ts";
import { setDropoutSeed } from "../../model/nin.ts";
import { flatWeightsOf } from "../../model/registry.ts";
import { createOptimizer, type Optimizer, type OptimizerConfig } from "../../optim/mod.ts";
import type { OptimizerState } from "../../optim/optimizer.ts";
import { roundToBf16 } from "../../util/bf16.ts";

/** Told each phase of a step as it ends: its name and `performance.now()` times (for `--trace`). */
export type PhaseRecorder = (name: string, startMs: number, endMs: number) => void;

/** Options for {@linkcode Replica}. */
export interface ReplicaOptions {
  /**
   * The model: image input `[batch, height, width, channels]`, logits
   * `[batch, classes]`. The replica owns it from now on.
   */
  model: tfl.LayersModel;
  /** The optimizer; default plain SGD. The learning rate is given at each step. */
  optimizer?: OptimizerConfig;
  /** Normalisation of the input; default none (d2l's `ToTensor` only). */
  normalize?: Normalization;
  /**
   * Round the gradient to bfloat16 before it is averaged, and the average
   * before it is applied (`wire: "bf16"`); statistics stay float32. Default false.
   */
  bf16Gradients?: boolean;
}

/** The result of {@linkcode Replica.computeGradients}. */
export interface LocalGradients {
  /**
   * What the all-reduce averages ({@linkcode Replica.numReduced} values): the
   * gradient of the mean loss over the batch for the trainable weights, in
   * `getWeights()` order (zero for a weight the loss does not depend on),
   * then the batch-normalisation statistics this batch moved to.
   */
  gradients: Float32Array<ArrayBuffer>;
  /** Sum of the per-example cross-entropy losses. */
  lossSum: number;
  /** Number of examples whose arg-max prediction equals the label. */
  correct: number;
  /** Number of examples in the batch. */
  count: number;
  /**
   * With `profile`: milliseconds until forward and backward had finished on
   * the device (upload and resize included), and then to read the gradient back.
   */
  timing?: { computeMs: number; readbackMs: number };
}

/**
 * A model replica on the active TensorFlow.js backend.
 *
 * Its weights are, in `getWeights()` order, the trainable ones (updated by
 * the optimizer), then the non-trainable ones: the moving mean and variance
 * of `batchNormalization` layers (which a training forward pass moves:
 * they travel with the gradient and every replica takes their average), and
 * frozen weights (`trainable: false`, never changed, never sent).
 *
 * @example One SGD step of NiN on a batch of two blank images
 * ```ts ignore
 * import { createNiN } from "../../model/nin.ts";
 * import { Replica } from "./replica.ts";
 *
 * const replica = new Replica({ model: createNiN({ inputSize: 67, width: 0.125 }) });
 * const batch = {
 *   images: new Uint8Array(2 * 28 * 28),
 *   labels: new Uint8Array([3, 5]),
 *   count: 2,
 *   rows: 28,
 *   cols: 28,
 * };
 * const local = await replica.computeGradients(batch);
 * await replica.applyGradients(local.gradients, { lr: 0.1 });
 * replica.dispose();
 * ```
 */
export class Replica {
  /** The underlying tfjs model. */
  readonly model: tfl.LayersModel;
  /** Number of weights, the length of every weight vector: trainable, statistics and frozen. */
  readonly numWeights: number;
  /** Number of trainable weights: what the optimizer updates. */
  readonly numParams: number;
  /** Length of the vector the all-reduce averages: trainable weights, then statistics. */
  readonly numReduced: number;
  /** The model's input: `[height, width, channels]`. */
  readonly inputShape: readonly [number, number, number];
  /** The number of classes the model tells apart. */
  readonly numClasses: number;
  readonly #normalize: Normalization | undefined;
  readonly #variables: tf.Variable[];
  readonly #trainable: tf.Variable[];
  /** The batch-normalisation statistics: each variable and where it sits in the weight vector. */
  readonly #statistics: { variable: tf.Variable; offset: number }[];
  readonly #optimizerConfig: OptimizerConfig;
  readonly #bf16: boolean;
  #optimizer: Optimizer;
  /** The trainable weights `[start, end)` the optimizer updates: all, unless sharded. */
  #optimizerRange: { start: number; end: number };
  /**
   * When set, told the phases of each step (upload, forward/backward
   * enqueue, device wait, read-back, optimizer, weight upload); the device
   * wait is then separated from the read-back, as with `profile`.
   */
  recorder: PhaseRecorder | undefined;
  /** The weights as last uploaded: the optimizer updates them here, then uploads. */
  #weights: Float32Array<ArrayBuffer> | undefined;

  /** A replica of `options.model`, with its current weights. */
  constructor(options: ReplicaOptions) {
    this.model = options.model;
    const [, height, width, channels] = this.model.inputs[0].shape as number[];
    this.inputShape = [height, width, channels];
    this.numClasses = this.model.outputs[0].shape[1] as number;
    this.#normalize = options.normalize;
    const layout = weightLayout(this.model);
    this.#variables = layout.variables;
    this.#trainable = layout.trainable;
    this.#statistics = layout.statistics;
    const size = (vs: readonly { size: number }[]) => vs.reduce((sum, v) => sum + v.size, 0);
    this.numWeights = size(this.#variables);
    this.numParams = size(this.#trainable);
    this.numReduced = this.numParams + size(this.#statistics.map((s) => s.variable));
    this.#optimizerConfig = options.optimizer ?? { name: "sgd" };
    this.#bf16 = options.bf16Gradients ?? false;
    this.#optimizer = createOptimizer(this.#optimizerConfig, { size: this.numParams });
    this.#optimizerRange = { start: 0, end: this.numParams };
    this.recorder = undefined;
  }

  /**
   * Shards the optimizer (ZeRO stage 1): from now on it holds the state of
   * the trainable weights in `chunk` (a range of the averaged vector) only,
   * and updates them in {@linkcode Replica.updateChunk}. Call it before the
   * first step; a state loaded later is cut to the chunk.
   */
  shardOptimizer(chunk: { start: number; end: number }): void {
    const start = Math.min(chunk.start, this.numParams);
    const end = Math.min(chunk.end, this.numParams);
    this.#optimizer = createOptimizer(this.#optimizerConfig, { size: end - start });
    this.#optimizerRange = { start, end };
  }

  /**
   * Where each batch-normalisation statistic sits in the weight vector, in
   * the order {@linkcode LocalGradients.gradients} carries them after the
   * trainable weights.
   */
  get statisticsLayout(): { offset: number; size: number }[] {
    return this.#statistics.map(({ variable, offset }) => ({ offset, size: variable.size }));
  }

  /** The trainable weights `[start, end)` whose optimizer state this replica holds. */
  get optimizerRange(): { start: number; end: number } {
    return { ...this.#optimizerRange };
  }

  /**
   * Forward and backward pass over `batch` in training mode: the gradient of
   * the mean cross-entropy over the batch and the batch-normalisation
   * statistics it moved to, read back into one Float32Array, plus the loss sum
   * and number correct for the metrics. The replica's statistics are left as
   * they were, so that every batch of a step starts from the same ones.
   *
   * `dropoutSeed` fixes the dropout masks, making the step reproducible.
   * `profile` waits for the device between the backward pass and the read-back
   * to time them separately (one extra synchronisation).
   */
  async computeGradients(
    batch: Batch,
    options: { dropoutSeed?: number; profile?: boolean } = {},
  ): Promise<LocalGradients> {
    const started = performance.now();
    if (batch.count === 0) {
      // Weighted by its count, 0: what it holds does not matter, but it must be finite.
      const gradients = new Float32Array(this.numReduced);
      const timing = options.profile ? { computeMs: 0, readbackMs: 0 } : undefined;
      return { gradients, lossSum: 0, correct: 0, count: 0, timing };
    }
    if (options.dropoutSeed !== undefined) setDropoutSeed(this.model, options.dropoutSeed);
    const record = this.recorder;
    const x = this.#toInput(batch);
    const y = tf.tensor1d(Int32Array.from(batch.labels), "int32");
    const uploaded = performance.now();
    record?.("upload", started, uploaded);
    let logits: tf.Tensor | undefined;
    const before = this.#statistics.map((s) => tf.clone(s.variable));
    const { value, grads } = tf.variableGrads(() => {
      logits = tf.keep(this.model.apply(x, { training: true }) as tf.Tensor);
      const oneHot = tf.oneHot(y, this.numClasses);
      return tf.losses.softmaxCrossEntropy(oneHot, logits, undefined, 0, tf.Reduction.MEAN);
    }, this.#trainable);
    let computed = 0;
    if (options.profile || record) {
      const enqueued = performance.now();
      await value.data(); // the device has run everything enqueued so far
      computed = performance.now();
      record?.("forward/backward enqueue", uploaded, enqueued);
      record?.("device wait", enqueued, computed);
    }
    // One read-back for everything: the flat gradient (zeros for a weight the
    // loss did not use), the statistics, then loss sum and correct count.
    const flat = tf.tidy(() =>
      tf.concat([
        ...this.#trainable.map((v) => tf.reshape(grads[v.name] ?? tf.zerosLike(v), [-1])),
        ...this.#statistics.map((s) => tf.reshape(s.variable, [-1])),
        tf.reshape(tf.mul(value, batch.count), [1]),
        tf.reshape(correctCount(logits!, y), [1]),
      ])
    );
    this.#statistics.forEach((s, i) => s.variable.assign(before[i])); // after the concat, in order
    tf.dispose([x, y, value, logits!, ...before, ...Object.values(grads)]);
    const data = await flat.data() as Float32Array<ArrayBuffer>;
    flat.dispose();
    const n = this.numReduced;
    if (this.#bf16) roundToBf16(data, 0, this.numParams);
    record?.("read-back", computed, performance.now());
    const timing = options.profile
      ? { computeMs: computed - started, readbackMs: performance.now() - computed }
      : undefined;
    return {
      gradients: data.subarray(0, n),
      lossSum: data[n],
      correct: data[n + 1],
      count: batch.count,
      timing,
    };
  }

  /**
   * Applies one optimizer step with the averaged vector `gradients` (as
   * {@linkcode LocalGradients.gradients}) at learning rate `options.lr`: the
   * update runs on the CPU over this replica's copy of the trainable weights
   * (the same bits on every replica and machine), the statistics take their
   * averaged values, and the new weights are uploaded.
   */
  async applyGradients(gradients: Float32Array, options: { lr: number }): Promise<void> {
    if (gradients.length !== this.numReduced) {
      throw new RangeError(`expected ${this.numReduced} averaged values, got ${gradients.length}`);
    }
    if (this.#optimizerRange.end - this.#optimizerRange.start !== this.numParams) {
      throw new Error("a sharded optimizer updates chunks (updateChunk), not the whole vector");
    }
    const weights = await this.#copy();
    const trainable = this.numParams;
    if (this.#bf16) roundToBf16(gradients, 0, trainable);
    const started = performance.now();
    this.#optimizer.step(weights.subarray(0, trainable), gradients.subarray(0, trainable), options);
    this.recorder?.("optimizer", started, performance.now());
    this.#takeStatistics(weights, gradients);
    this.#upload(weights);
  }

  /**
   * The sharded optimizer's step (see {@linkcode Replica.shardOptimizer}):
   * `chunk` holds this replica's chunk of the averaged vector; its trainable
   * part is updated and overwritten with the new weights. Declines (returns
   * false, changes nothing) if the chunk holds a value that is not finite.
   * Needs the weights on the host ({@linkcode Replica.loadHostWeights}).
   */
  updateChunk(chunk: Float32Array, options: { lr: number }): boolean {
    const weights = this.#weights;
    if (weights === undefined) throw new Error("updateChunk before loadHostWeights");
    if (firstNonFinite(chunk) >= 0) return false;
    const { start, end } = this.#optimizerRange;
    if (this.#bf16) roundToBf16(chunk, 0, end - start);
    const slice = weights.subarray(start, end);
    const started = performance.now();
    this.#optimizer.step(slice, chunk.subarray(0, end - start), options);
    chunk.set(slice);
    this.recorder?.("optimizer (its chunk)", started, performance.now());
    return true;
  }

  /**
   * Takes the vector a sharded step gathered: the updated trainable weights,
   * then the averaged statistics; uploads them.
   */
  setUpdated(vector: Float32Array): void {
    const weights = this.#weights;
    if (weights === undefined) throw new Error("setUpdated before loadHostWeights");
    if (vector.length !== this.numReduced) {
      throw new RangeError(`expected ${this.numReduced} values, got ${vector.length}`);
    }
    weights.set(vector.subarray(0, this.numParams));
    this.#takeStatistics(weights, vector);
    this.#upload(weights);
  }

  /** Reads the weights to the host if they are not there yet (once, from the device). */
  async loadHostWeights(): Promise<void> {
    await this.#copy();
  }

  /** A copy of the optimizer's state (step count, momentum or moments); sharded: of its range. */
  optimizerState(): OptimizerState {
    return this.#optimizer.state();
  }

  /**
   * Restores the optimizer's state, for all trainable weights (a sharded
   * optimizer keeps its range of it); throws a `RangeError` if it does not fit.
   */
  loadOptimizerState(state: OptimizerState): void {
    const { start, end } = this.#optimizerRange;
    if (end - start === this.numParams) return this.#optimizer.loadState(state);
    const slots = Object.fromEntries(
      Object.entries(state.slots).map((
        [name, slot],
      ) => [name, slot.length === this.numParams ? slot.slice(start, end) : slot]),
    );
    this.#optimizer.loadState({ step: state.step, slots });
  }

  /** Waits until the device has finished all work enqueued so far (e.g. an SGD update). */
  async sync(): Promise<void> {
    const last = this.#variables[this.#variables.length - 1];
    const probe = tf.tidy(() => tf.slice(tf.reshape(last, [-1]), 0, 1));
    await probe.data();
    probe.dispose();
  }

  /** Number of correct arg-max predictions on `batch` in inference mode (no dropout). */
  async countCorrect(batch: Batch): Promise<number> {
    if (batch.count === 0) return 0;
    const x = this.#toInput(batch);
    const y = tf.tensor1d(Int32Array.from(batch.labels), "int32");
    const correct = tf.tidy(() => correctCount(this.model.apply(x) as tf.Tensor, y));
    tf.dispose([x, y]);
    const value = (await correct.data())[0];
    correct.dispose();
    return value;
  }

  /** All weights, flattened in `model.getWeights()` order. */
  async getWeights(): Promise<Float32Array<ArrayBuffer>> {
    return (await this.#copy()).slice();
  }

  /** Overwrites all weights from a flat vector in `model.getWeights()` order. */
  setWeights(weights: Float32Array): void {
    if (weights.length !== this.numWeights) {
      throw new RangeError(`expected ${this.numWeights} weights, got ${weights.length}`);
    }
    this.#weights = Float32Array.from(weights);
    this.#upload(this.#weights);
  }

  /** Frees the model's tensors. */
  dispose(): void {
    this.model.dispose();
  }

  /** Puts the statistics that follow the trainable values in `averaged` in their places in `weights`. */
  #takeStatistics(weights: Float32Array, averaged: Float32Array): void {
    let at = this.numParams;
    for (const { variable, offset } of this.#statistics) {
      weights.set(averaged.subarray(at, at + variable.size), offset);
      at += variable.size;
    }
  }

  /** This replica's copy of the weights, read from the device the first time it is needed. */
  async #copy(): Promise<Float32Array<ArrayBuffer>> {
    return this.#weights ??= await flatWeightsOf(this.model);
  }

  /** Gives the model `weights` (a copy: tfjs may upload lazily, and ours change in place). */
  #upload(weights: Float32Array): void {
    const started = performance.now();
    setFlatWeights(this.model, weights.slice());
    this.recorder?.("weight upload", started, performance.now());
  }

  #toInput(batch: Batch): tf.Tensor4D {
    const [height, width] = this.inputShape;
    return toModelInput(batch, { height, width, normalize: this.#normalize });
  }
}

/**
 * The index of the first value of `values` that is not finite, or -1.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { firstNonFinite } from "./replica.ts";
 *
 * assert.equal(firstNonFinite(new Float32Array([1, NaN, Infinity])), 1);
 * assert.equal(firstNonFinite(new Float32Array([1, 2])), -1);
 * ```
 */
export function firstNonFinite(values: Float32Array): number {
  let sum = 0; // 0·x is 0 for every finite x, NaN otherwise: one pass without branches
  for (let i = 0; i < values.length; i++) sum += values[i] * 0;
  return sum === 0 ? -1 : values.findIndex((value) => !Number.isFinite(value));
}

function correctCount(logits: tf.Tensor, labels: tf.Tensor): tf.Tensor {
  return tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), labels), "float32"));
}

/**
 * The model's weights in `getWeights()` order (tfjs lists the trainable ones
 * first), the trainable ones, and which of the rest are batch-normalisation
 * statistics: the moving mean and variance of a `BatchNormalization` layer,
 * nested models included. tfjs moves them in every training forward pass,
 * also in a layer set `trainable: false`.
 */
function weightLayout(model: tfl.LayersModel): {
  variables: tf.Variable[];
  trainable: tf.Variable[];
  statistics: { variable: tf.Variable; offset: number }[];
} {
  const statisticIds = new Set<number>();
  const visit = (layer: tfl.layers.Layer) => {
    const nested = (layer as unknown as { layers?: tfl.layers.Layer[] }).layers;
    if (Array.isArray(nested)) nested.forEach(visit);
    if (layer.getClassName() !== "BatchNormalization") return;
    for (const weight of layer.weights) {
      if (/moving_(mean|variance)$/.test(weight.originalName)) statisticIds.add(weight.id);
    }
  };
  model.layers.forEach(visit);
  const weights = model.weights;
  const trainableCount = model.trainableWeights.length;
  if (weights.slice(0, trainableCount).some((w) => !w.trainable)) {
    throw new Error("the model does not list its trainable weights first"); // tfjs always does
  }
  const variables = weights.map((w) => w.read() as tf.Variable);
  const statistics: { variable: tf.Variable; offset: number }[] = [];
  let offset = 0;
  weights.forEach((weight, i) => {
    if (i >= trainableCount && statisticIds.has(weight.id)) {
      statistics.push({ variable: variables[i], offset });
    }
    offset += variables[i].size;
  });
  return { variables, trainable: variables.slice(0, trainableCount), statistics };
}
