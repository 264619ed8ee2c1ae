/**
 * Evaluating a trained model on a data set: accuracy, per-class accuracy and
 * the confusion matrix.
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type * as tfl from "npm:@tensorflow/tfjs-layers@4.22.0";
import { gatherBatch } from "../../data/batches.ts";
import type { Dataset } from "../../data/dataset.ts";
import type { Normalization } from "../../data/dataset.ts";
import { toModelInput } from "../shared/model_input.ts";

/** The result of {@linkcode evaluateModel}. */
export interface Evaluation {
  /** Examples evaluated. */
  count: number;
  /** Examples whose arg-max prediction is the label. */
  correct: number;
  /** `correct / count`. */
  accuracy: number;
  /** `confusion[label][prediction]`: how many examples of class `label` were predicted as `prediction`. */
  confusion: number[][];
}

/**
 * Runs `model` (inference mode) over `dataset` in batches and counts right and
 * wrong predictions per class. Images are resized to the model's input size
 * and normalised with `normalize` (as in training).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createNiN } from "../../model/nin.ts";
 * import { initBackend } from "../shared/backend.ts";
 * import { evaluateModel } from "./evaluate.ts";
 *
 * await initBackend("cpu");
 * const model = createNiN({ inputSize: 67, width: 0.125 });
 * const dataset = { images: new Uint8Array(3 * 784), labels: new Uint8Array([0, 1, 2]), count: 3, rows: 28, cols: 28 };
 * const result = await evaluateModel(model, dataset);
 * assert.equal(result.count, 3);
 * assert.equal(result.confusion.flat().reduce((a, b) => a + b), 3);
 * model.dispose();
 * ```
 */
export async function evaluateModel(
  model: tfl.LayersModel,
  dataset: Dataset,
  options: {
    batchSize?: number;
    normalize?: Normalization;
    onProgress?: (done: number, total: number) => void;
  } = {},
): Promise<Evaluation> {
  const batchSize = options.batchSize ?? 128;
  const [, height, width] = model.inputs[0].shape as number[];
  const classes = model.outputs[0].shape[1] as number;
  const confusion = Array.from({ length: classes }, () => new Array(classes).fill(0));
  let correct = 0;
  for (let start = 0; start < dataset.count; start += batchSize) {
    const indices = Array.from(
      { length: Math.min(batchSize, dataset.count - start) },
      (_, i) => start + i,
    );
    const batch = gatherBatch(dataset, indices);
    const x = toModelInput(batch, { height, width, normalize: options.normalize });
    const predicted = tf.tidy(() => tf.argMax(model.predict(x) as tf.Tensor, 1));
    const labels = await predicted.data();
    tf.dispose([x, predicted]);
    labels.forEach((prediction, i) => {
      const label = batch.labels[i];
      confusion[label][prediction]++;
      if (label === prediction) correct++;
    });
    options.onProgress?.(start + indices.length, dataset.count);
  }
  return { count: dataset.count, correct, accuracy: correct / dataset.count, confusion };
}
