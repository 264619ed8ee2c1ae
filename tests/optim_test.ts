import assert from "node:assert/strict";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
import {
  Adam,
  createOptimizer,
  learningRateAt,
  type Optimizer,
  optimizerProblem,
  parseSchedule,
  SGD,
} from "../lib/optim/mod.ts";
import { mulberry32 } from "../lib/util/random.ts";

await tf.setBackend("cpu");

function randomVector(n: number, seed: number, scale = 1): Float32Array {
  const random = mulberry32(seed);
  return Float32Array.from({ length: n }, () => (random() / 2 ** 31 - 1) * scale);
}

/** Runs `steps` updates with ours and with a tfjs optimizer (on the cpu backend), from the same start. */
async function compare(
  ours: Optimizer,
  theirs: tf.Optimizer,
  options: { steps: number; lr: number; weightDecay?: number },
): Promise<{ maxRelative: number }> {
  const n = 257;
  const start = randomVector(n, 1);
  const weights = start.slice();
  const variable = tf.variable(tf.tensor1d(start), true, "w");
  for (let step = 0; step < options.steps; step++) {
    const gradient = randomVector(n, 100 + step, 0.5);
    ours.step(weights, gradient, { lr: options.lr });
    tf.tidy(() => {
      let g: tf.Tensor = tf.tensor1d(gradient);
      if (options.weightDecay) g = tf.add(g, tf.mul(options.weightDecay, variable));
      theirs.applyGradients({ w: g });
    });
  }
  const reference = await variable.data();
  variable.dispose();
  theirs.dispose();
  let maxRelative = 0;
  for (let i = 0; i < n; i++) {
    const scale = Math.max(Math.abs(reference[i]), 1e-3);
    maxRelative = Math.max(maxRelative, Math.abs(weights[i] - reference[i]) / scale);
  }
  return { maxRelative };
}

// Adam: both sides compute in float32, but tfjs orders the bias corrections
// differently (it divides the moments, we scale the step): a few ulps per step,
// growing at most linearly over the steps (measured: 2.4e-6 after 30).
const ADAM_TOLERANCE = 1e-5;

Deno.test("SGD without momentum takes w − lr·g, rounded as float32 arithmetic rounds", () => {
  const sgd = new SGD(3);
  const w = new Float32Array([1, -2, 0.3]);
  const g = new Float32Array([0.1, 0.7, -3]);
  sgd.step(w, g, { lr: 0.1 });
  const lr = Math.fround(0.1);
  for (const [i, start] of [1, -2, 0.3].entries()) {
    assert.equal(w[i], Math.fround(Math.fround(start) - Math.fround(lr * g[i])));
  }
  assert.deepEqual(sgd.state(), { step: 1, slots: {} });
});

Deno.test("SGD with momentum, Nesterov and weight decay follows tfjs's optimizers", async (t) => {
  for (const nesterov of [false, true]) {
    for (const weightDecay of [0, 0.01]) {
      await t.step(`nesterov ${nesterov}, weight decay ${weightDecay}`, async () => {
        const ours = new SGD(257, { momentum: 0.9, nesterov, weightDecay });
        const theirs = tf.train.momentum(0.05, 0.9, nesterov);
        const { maxRelative } = await compare(ours, theirs, { steps: 20, lr: 0.05, weightDecay });
        // The same float32 operations in the same order: the same bits.
        assert.equal(maxRelative, 0);
      });
    }
  }
});

Deno.test("Adam follows tfjs's Adam, with and without weight decay", async (t) => {
  for (const weightDecay of [0, 0.01]) {
    await t.step(`weight decay ${weightDecay}`, async () => {
      const ours = new Adam(257, { beta1: 0.9, beta2: 0.99, epsilon: 1e-7, weightDecay });
      const theirs = tf.train.adam(0.01, 0.9, 0.99, 1e-7);
      const { maxRelative } = await compare(ours, theirs, { steps: 30, lr: 0.01, weightDecay });
      assert.ok(maxRelative < ADAM_TOLERANCE, `max relative difference ${maxRelative}`);
    });
  }
});

Deno.test("an optimizer restored from its state continues with the same bits", async (t) => {
  const configs = [
    { name: "sgd", momentum: 0.9, nesterov: true, weightDecay: 1e-4 },
    { name: "adam", weightDecay: 1e-4 },
  ] as const;
  for (const config of configs) {
    await t.step(config.name, () => {
      const n = 64;
      const straight = createOptimizer(config, { size: n });
      const w1 = randomVector(n, 5);
      const w2 = w1.slice();
      for (let step = 0; step < 6; step++) {
        straight.step(w1, randomVector(n, step, 0.1), { lr: 0.01 });
      }
      let first = createOptimizer(config, { size: n });
      for (let step = 0; step < 3; step++) first.step(w2, randomVector(n, step, 0.1), { lr: 0.01 });
      const saved = first.state();
      first = createOptimizer(config, { size: n });
      first.loadState(saved);
      for (let step = 3; step < 6; step++) first.step(w2, randomVector(n, step, 0.1), { lr: 0.01 });
      assert.deepEqual(w2, w1);
      assert.deepEqual(first.state(), straight.state());
    });
  }
});

Deno.test("a state that does not fit the optimizer is refused", () => {
  const sgd = new SGD(4, { momentum: 0.9 });
  assert.throws(() => sgd.loadState({ step: 1, slots: {} }), /slots \[\], expected \[momentum\]/);
  assert.throws(
    () => sgd.loadState({ step: 1, slots: { momentum: new Float32Array(3) } }),
    /does not hold 4 float32 values/,
  );
  assert.throws(
    () =>
      new Adam(4).loadState({
        step: -1,
        slots: { m: new Float32Array(4), v: new Float32Array(4) },
      }),
    /step count -1/,
  );
  assert.throws(() => sgd.step(new Float32Array(4), new Float32Array(5), { lr: 1 }), RangeError);
});

Deno.test("optimizer configurations are checked field by field", () => {
  assert.equal(optimizerProblem({ name: "sgd" }), undefined);
  assert.match(optimizerProblem({ name: "rmsprop" })!, /name must be one of sgd, adam/);
  assert.match(optimizerProblem({ name: "sgd", momentum: 1 })!, /momentum must be a number in/);
  assert.match(optimizerProblem({ name: "sgd", momentum: "0.9" })!, /momentum must be a number/);
  assert.match(optimizerProblem({ name: "sgd", nesterov: true })!, /needs a momentum/);
  assert.match(optimizerProblem({ name: "sgd", beta1: 0.9 })!, /sgd takes no beta1/);
  assert.match(optimizerProblem({ name: "adam", epsilon: 0 })!, /epsilon must be a number > 0/);
  assert.match(optimizerProblem("adam")!, /not an object/);
});

Deno.test("learning-rate schedules: step, cosine and warm-up", () => {
  const at = (schedule: Parameters<typeof learningRateAt>[0], step: number) =>
    learningRateAt(schedule, { lr: 1, step, stepsPerEpoch: 10, totalSteps: 100 });
  const step = parseSchedule("step:every=3,gamma=0.5");
  assert.deepEqual([0, 29, 30, 59, 60].map((s) => at(step, s)), [1, 1, 0.5, 0.5, 0.25]);
  const cosine = parseSchedule("cosine:min=0.1");
  assert.equal(at(cosine, 0), 1);
  assert.ok(Math.abs(at(cosine, 50) - 0.55) < 1e-12);
  assert.ok(at(cosine, 99) > 0.1 && at(cosine, 99) < 0.1003);
  const warm = parseSchedule("constant:warmup=2");
  assert.deepEqual([0, 9, 19, 20].map((s) => at(warm, s)), [0.05, 0.5, 1, 1]);
  assert.throws(() => parseSchedule("linear"), /name must be one of constant, step, cosine/);
  assert.throws(() => parseSchedule("step:every=0"), /every= must be a whole number ≥ 1/);
  assert.throws(() => parseSchedule("cosine:every=2"), /cosine has no field every=/);
  assert.throws(() => parseSchedule("cosine:warmup=x"), /warmup= must be a number ≥ 0/);
});
