/**
 * Adam (Kingma & Ba), as PyTorch's `torch.optim.Adam`: bias-corrected first
 * and second moments, optional L2 weight decay added to the gradient.
 *
 * @module
 */

import { checkLengths, type Optimizer, type OptimizerState, stateProblem } from "./optimizer.ts";
import { SIMD_AVAILABLE, SimdMemory } from "./_simd.ts";

const f32 = Math.fround;

/** Options of {@linkcode Adam}. */
export interface AdamOptions {
  /** Decay of the first moment. Default 0.9. */
  beta1?: number;
  /** Decay of the second moment. Default 0.999. */
  beta2?: number;
  /** Added to the root of the second moment. Default 1e-8. */
  epsilon?: number;
  /** L2 penalty added to the gradient, `g + weightDecay·w`. Default 0. */
  weightDecay?: number;
  /**
   * Run the update in WebAssembly SIMD (the same bits as the scalar loop,
   * several times faster). Default: where the runtime has it.
   */
  simd?: boolean;
}

/**
 * Adam over a flat weight vector, at step `t` (counting from 1):
 *
 * ```
 * d ← g + weightDecay·w
 * m ← β1·m + (1 − β1)·d
 * v ← β2·v + (1 − β2)·d²
 * w ← w − lr / (1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
 * ```
 *
 * Every operation is rounded to float32, in the order written; the two
 * bias corrections are computed once per step in float64 and then rounded.
 * A WebAssembly SIMD loop runs it, or the scalar JavaScript one
 * (`simd: false`): both give the same bits.
 *
 * @example One step moves every weight by about lr
 * ```ts
 * import assert from "node:assert/strict";
 * import { Adam } from "./adam.ts";
 *
 * const adam = new Adam(2);
 * const w = new Float32Array([1, 1]);
 * adam.step(w, new Float32Array([3, -0.5]), { lr: 0.01 });
 * assert.ok(Math.abs(w[0] - 0.99) < 1e-6 && Math.abs(w[1] - 1.01) < 1e-6);
 * ```
 */
export class Adam implements Optimizer {
  readonly name = "adam";
  readonly #size: number;
  readonly #beta1: number;
  readonly #beta2: number;
  readonly #epsilon: number;
  readonly #weightDecay: number;
  readonly #m: Float32Array<ArrayBuffer>;
  readonly #v: Float32Array<ArrayBuffer>;
  readonly #simd: SimdMemory | undefined;
  #step = 0;

  /** An Adam optimizer for `size` weights. */
  constructor(size: number, options: AdamOptions = {}) {
    this.#size = size;
    this.#beta1 = f32(options.beta1 ?? 0.9);
    this.#beta2 = f32(options.beta2 ?? 0.999);
    this.#epsilon = f32(options.epsilon ?? 1e-8);
    this.#weightDecay = f32(options.weightDecay ?? 0);
    if (options.simd ?? SIMD_AVAILABLE) {
      this.#simd = new SimdMemory(size, 2);
      [this.#m, this.#v] = this.#simd.slots.map((slot) => slot.subarray(0, size));
    } else {
      this.#m = new Float32Array(size);
      this.#v = new Float32Array(size);
    }
  }

  /** One Adam update of `weights`, in place (see the class documentation). */
  step(weights: Float32Array, gradient: Float32Array, options: { lr: number }): void {
    checkLengths(weights, gradient, this.#size);
    const t = this.#step + 1;
    const b1 = this.#beta1, b2 = this.#beta2, eps = this.#epsilon, decay = this.#weightDecay;
    const c1 = f32(1 - b1), c2 = f32(1 - b2);
    const stepSize = f32(options.lr / (1 - b1 ** t));
    const root2 = f32(Math.sqrt(1 - b2 ** t));
    this.#step = t;
    if (this.#simd !== undefined) {
      this.#simd.adam(weights, gradient, { b1, b2, c1, c2, eps, stepSize, root2, decay });
      return;
    }
    const m = this.#m, v = this.#v;
    for (let i = 0; i < weights.length; i++) {
      const d = decay === 0 ? gradient[i] : f32(gradient[i] + f32(decay * weights[i]));
      const mi = f32(f32(b1 * m[i]) + f32(c1 * d));
      const vi = f32(f32(b2 * v[i]) + f32(c2 * f32(d * d)));
      m[i] = mi;
      v[i] = vi;
      const denominator = f32(f32(f32(Math.sqrt(vi)) / root2) + eps);
      weights[i] = weights[i] - f32(stepSize * f32(mi / denominator));
    }
  }

  /** Step count and both moments. */
  state(): OptimizerState {
    return { step: this.#step, slots: { m: this.#m.slice(), v: this.#v.slice() } };
  }

  /** Restores a state from {@linkcode Adam.state}. */
  loadState(state: OptimizerState): void {
    const problem = stateProblem(state, { names: ["m", "v"], size: this.#size });
    if (problem !== undefined) throw new RangeError(problem);
    this.#step = state.step;
    this.#m.set(state.slots.m);
    this.#v.set(state.slots.v);
  }
}
