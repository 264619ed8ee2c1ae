/**
 * What every optimizer is: an update of a flat weight vector from a flat
 * gradient, with its state (step count, per-weight slots) as plain arrays.
 *
 * Optimizers run on the CPU, in the thread that holds the replica, on the
 * averaged gradient the all-reduce has just left in memory; the device only
 * receives the new weights. Every arithmetic operation is rounded to float32
 * (`Math.fround`), so an update gives the same bits on every machine and in
 * every thread: replicas stay bit-identical, and a resumed run continues with
 * exactly the state it stopped with.
 *
 * @module
 */

/** The state an optimizer carries from step to step, as a checkpoint holds it. */
export interface OptimizerState {
  /** Updates applied so far. */
  step: number;
  /** Per-weight state, each as long as the weight vector (momentum, moments). */
  slots: Record<string, Float32Array<ArrayBuffer>>;
}

/** An optimizer over a flat weight vector. */
export interface Optimizer {
  /** Registered name (see `OPTIMIZERS` in mod.ts). */
  readonly name: string;
  /**
   * Updates `weights` in place with `gradient` (same length) at learning rate
   * `options.lr`.
   */
  step(weights: Float32Array, gradient: Float32Array, options: { lr: number }): void;
  /** A copy of the state, for a checkpoint. */
  state(): OptimizerState;
  /** Restores a state from {@linkcode Optimizer.state}; throws a `RangeError` if it does not fit. */
  loadState(state: OptimizerState): void;
}

/**
 * Checks that `state` has exactly the slots `names`, each of `size` values,
 * and a whole, non-negative step count; returns a message otherwise.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { stateProblem } from "./optimizer.ts";
 *
 * const slots = { momentum: new Float32Array(3) };
 * assert.equal(stateProblem({ step: 2, slots }, { names: ["momentum"], size: 3 }), undefined);
 * assert.match(stateProblem({ step: 2, slots }, { names: ["m", "v"], size: 3 })!, /slots/);
 * ```
 */
export function stateProblem(
  state: OptimizerState,
  expected: { names: readonly string[]; size: number },
): string | undefined {
  if (!Number.isSafeInteger(state.step) || state.step < 0) {
    return `optimizer step count ${state.step} is not a whole number ≥ 0`;
  }
  const names = Object.keys(state.slots).sort();
  if (names.join() !== [...expected.names].sort().join()) {
    return `optimizer state has slots [${names.join(", ")}], expected [${
      expected.names.join(", ")
    }]`;
  }
  for (const name of names) {
    const slot = state.slots[name];
    if (!(slot instanceof Float32Array) || slot.length !== expected.size) {
      return `optimizer slot ${name} does not hold ${expected.size} float32 values`;
    }
  }
  return undefined;
}

/**
 * Throws a `RangeError` unless `weights` and `gradient` both have `size` values.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkLengths } from "./optimizer.ts";
 *
 * assert.throws(() => checkLengths(new Float32Array(2), new Float32Array(3), 2), RangeError);
 * ```
 */
export function checkLengths(weights: Float32Array, gradient: Float32Array, size: number): void {
  if (weights.length !== size || gradient.length !== size) {
    throw new RangeError(
      `expected ${size} weights and gradient values, got ${weights.length} and ${gradient.length}`,
    );
  }
}
