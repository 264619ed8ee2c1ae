/**
 * Stochastic gradient descent on a flat gradient vector.
 *
 * @module
 */

import * as tf from "@tensorflow/tfjs-core";

/**
 * One plain SGD step, `w ← w − lr·g`, for every variable, where `gradients`
 * holds all their gradients flattened and concatenated in variable order.
 *
 * Every replica calls this with bit-identical `gradients`, so every replica's
 * weights stay bit-identical.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import * as tf from "@tensorflow/tfjs-core";
 * import "@tensorflow/tfjs-backend-cpu";
 * import { sgdUpdate } from "./optimizer.ts";
 *
 * await tf.setBackend("cpu");
 * const w = tf.variable(tf.tensor1d([1, 2]));
 * const b = tf.variable(tf.scalar(3));
 * sgdUpdate([w, b], new Float32Array([10, 20, 30]), { lr: 0.1 });
 * assert.ok((await w.data()).join() === "0,0" && (await b.data())[0] === 0);
 * ```
 */
export function sgdUpdate(
  variables: readonly tf.Variable[],
  gradients: Float32Array,
  options: { lr: number | tf.Scalar },
): void {
  const total = variables.reduce((sum, v) => sum + v.size, 0);
  if (gradients.length !== total) {
    throw new RangeError(`expected a gradient of ${total} values, got ${gradients.length}`);
  }
  tf.tidy(() => {
    const lr = typeof options.lr === "number" ? tf.scalar(options.lr) : options.lr;
    let offset = 0;
    for (const v of variables) {
      const g = tf.tensor(gradients.subarray(offset, offset + v.size), v.shape, "float32");
      v.assign(tf.sub(v, tf.mul(lr, g)));
      offset += v.size;
    }
  });
}
