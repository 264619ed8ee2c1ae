/**
 * From a batch's bytes to the model's input tensor, the same way in training
 * (in every worker) and in evaluation (in the main thread).
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { Batch } from "../../data/batches.ts";
import type { Normalization } from "../../data/dataset.ts";

/**
 * The model input for `batch`: its values uploaded, resized bilinearly on the
 * device to `height`×`width` when they differ (half-pixel centres, as
 * torchvision), bytes scaled to [0, 1] as d2l's `Resize` + `ToTensor` (float32
 * values are taken as they are), then normalised per channel if asked.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { initBackend } from "./backend.ts";
 * import { toModelInput } from "./model_input.ts";
 *
 * await initBackend("cpu");
 * const images = new Uint8Array(784).fill(255);
 * const batch = { images, labels: new Uint8Array([1]), count: 1, rows: 28, cols: 28 };
 * const x = toModelInput(batch, { height: 67, width: 67 });
 * assert.deepEqual(x.shape, [1, 67, 67, 1]);
 * const max = tf.max(x);
 * assert.equal((await max.data())[0], 1);
 * tf.dispose([max, x]);
 * ```
 */
export function toModelInput(
  batch: Batch,
  options: { height: number; width: number; normalize?: Normalization },
): tf.Tensor4D {
  return tf.tidy(() => {
    const shape: [number, number, number, number] = [
      batch.count,
      batch.rows,
      batch.cols,
      batch.channels ?? 1,
    ];
    const bytes = batch.images instanceof Uint8Array;
    let x: tf.Tensor4D = tf.tensor4d(bytes ? Float32Array.from(batch.images) : batch.images, shape);
    if (batch.rows !== options.height || batch.cols !== options.width) {
      x = tf.image.resizeBilinear(x, [options.height, options.width], false, true);
    }
    if (bytes) x = tf.div(x, 255);
    if (options.normalize) {
      x = tf.div(
        tf.sub(x, tf.tensor1d([...options.normalize.mean])),
        tf.tensor1d([...options.normalize.std]),
      );
    }
    return x;
  });
}
