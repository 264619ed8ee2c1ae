/**
 * Stochastic gradient descent, with optional momentum, Nesterov momentum and
 * L2 weight decay, as PyTorch's `torch.optim.SGD` (no dampening).
 *
 * @module
 */

import { checkLengths, type Optimizer, type OptimizerState, stateProblem } from "./optimizer.ts";
import { SIMD_AVAILABLE, SimdMemory } from "./_simd.ts";

const f32 = Math.fround;

/** Options of {@linkcode SGD}. */
export interface SGDOptions {
  /** Momentum factor; 0 (the default) is plain SGD. */
  momentum?: number;
  /** Nesterov momentum (needs `momentum` > 0). Default false. */
  nesterov?: boolean;
  /** L2 penalty added to the gradient, `g + weightDecay·w`. Default 0. */
  weightDecay?: number;
  /**
   * Run the update in WebAssembly SIMD (the same bits as the scalar loop,
   * several times faster). Default: where the runtime has it.
   */
  simd?: boolean;
}

/**
 * SGD over a flat weight vector:
 *
 * ```
 * d ← g + weightDecay·w
 * b ← momentum·b + d                       (b starts at zero)
 * w ← w − lr·(nesterov ? d + momentum·b : b)
 * ```
 *
 * and plain `w ← w − lr·g` without momentum or decay (no state). Every
 * operation is rounded to float32, in the order written, by a WebAssembly
 * SIMD loop or by the scalar JavaScript one (`simd: false`): both give the
 * same bits.
 *
 * @example Two steps with momentum 0.9
 * ```ts
 * import assert from "node:assert/strict";
 * import { SGD } from "./sgd.ts";
 *
 * const sgd = new SGD(1, { momentum: 0.9 });
 * const w = new Float32Array([1]);
 * sgd.step(w, new Float32Array([1]), { lr: 0.5 }); // b = 1
 * sgd.step(w, new Float32Array([1]), { lr: 0.5 }); // b = 1.9
 * assert.equal(w[0], Math.fround(1 - 0.5 - Math.fround(0.5 * Math.fround(1.9))));
 * assert.equal(sgd.state().step, 2);
 * ```
 */
export class SGD implements Optimizer {
  readonly name = "sgd";
  readonly #size: number;
  readonly #momentum: number;
  readonly #nesterov: boolean;
  readonly #weightDecay: number;
  readonly #buffer: Float32Array<ArrayBuffer> | undefined;
  readonly #simd: SimdMemory | undefined;
  #step = 0;

  /** An SGD optimizer for `size` weights. */
  constructor(size: number, options: SGDOptions = {}) {
    this.#size = size;
    this.#momentum = f32(options.momentum ?? 0);
    this.#nesterov = options.nesterov ?? false;
    this.#weightDecay = f32(options.weightDecay ?? 0);
    if (this.#nesterov && this.#momentum <= 0) {
      throw new RangeError("Nesterov momentum needs a momentum above 0");
    }
    const slots = this.#momentum > 0 ? 1 : 0;
    if (options.simd ?? SIMD_AVAILABLE) {
      this.#simd = new SimdMemory(size, slots);
      this.#buffer = slots === 0 ? undefined : this.#simd.slots[0].subarray(0, size);
    } else this.#buffer = slots === 0 ? undefined : new Float32Array(size);
  }

  /** `w ← w − lr·update`, in place (see the class documentation). */
  step(weights: Float32Array, gradient: Float32Array, options: { lr: number }): void {
    checkLengths(weights, gradient, this.#size);
    const lr = f32(options.lr);
    const momentum = this.#momentum;
    const decay = this.#weightDecay;
    const buffer = this.#buffer;
    if (this.#simd !== undefined) {
      this.#simd.sgd(weights, gradient, {
        decay: decay !== 0,
        momentum: buffer !== undefined,
        nesterov: this.#nesterov,
        lr,
        momentumFactor: momentum,
        decayFactor: decay,
      });
    } else if (buffer === undefined && decay === 0) {
      for (let i = 0; i < weights.length; i++) weights[i] = weights[i] - f32(lr * gradient[i]);
    } else {
      for (let i = 0; i < weights.length; i++) {
        const d = decay === 0 ? gradient[i] : f32(gradient[i] + f32(decay * weights[i]));
        let update = d;
        if (buffer !== undefined) {
          const b = f32(f32(momentum * buffer[i]) + d);
          buffer[i] = b;
          update = this.#nesterov ? f32(d + f32(momentum * b)) : b;
        }
        weights[i] = weights[i] - f32(lr * update);
      }
    }
    this.#step++;
  }

  /** Step count and, with momentum, the momentum buffer. */
  state(): OptimizerState {
    return {
      step: this.#step,
      slots: this.#buffer === undefined ? {} : { momentum: this.#buffer.slice() },
    };
  }

  /** Restores a state from {@linkcode SGD.state}. */
  loadState(state: OptimizerState): void {
    const names = this.#buffer === undefined ? [] : ["momentum"];
    const problem = stateProblem(state, { names, size: this.#size });
    if (problem !== undefined) throw new RangeError(problem);
    this.#step = state.step;
    if (this.#buffer !== undefined) this.#buffer.set(state.slots.momentum);
  }
}
