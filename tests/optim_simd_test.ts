/**
 * The WebAssembly SIMD update loops give the scalar reference's bits, on
 * vectors built to reach every corner of float32: subnormals, both zeros,
 * values near the largest float, infinities, NaN, both signs, and random bit
 * patterns, over lengths that are not multiples of 4 or of the copy block.
 */

import assert from "node:assert/strict";
import { Adam, type AdamOptions, SGD, type SGDOptions } from "../lib/optim/mod.ts";
import { ignoredWithout } from "./skips.ts";
import { assertSameBits, awkwardVector } from "./helpers.ts";

const LENGTHS = [1, 3, 4, 7, 16384, 16385, 2 * 16384 + 3]; // around the copy block

/** Runs 4 steps of two optimizers from the same awkward start and compares weights and state. */
function compare(make: (simd: boolean, n: number) => SGD | Adam, seed: number, lr: number): void {
  for (const n of LENGTHS) {
    const simd = make(true, n), scalar = make(false, n);
    const a = awkwardVector(n, seed), b = a.slice();
    for (let step = 0; step < 4; step++) {
      const gradient = awkwardVector(n, seed * 31 + step);
      simd.step(a, gradient, { lr });
      scalar.step(b, gradient, { lr });
      assertSameBits(a, b, `n = ${n}, step ${step + 1}, weights`);
    }
    const [s, r] = [simd.state(), scalar.state()];
    assert.equal(s.step, r.step);
    for (const name of Object.keys(r.slots)) {
      assertSameBits(s.slots[name], r.slots[name], `n = ${n}, slot ${name}`);
    }
  }
}

Deno.test({
  name: "SIMD and scalar SGD give the same bits on every kind of float32",
  ignore: await ignoredWithout("wasm-simd"),
  fn: async (t) => {
    const configs: SGDOptions[] = [
      {},
      { weightDecay: 0.01 },
      { momentum: 0.9 },
      { momentum: 0.9, weightDecay: 5e-4 },
      { momentum: 0.5, nesterov: true },
      { momentum: 0.99, nesterov: true, weightDecay: 1e-4 },
    ];
    for (const [k, config] of configs.entries()) {
      await t.step(JSON.stringify(config), () => {
        for (const lr of [0.1, 3e-4, 7]) {
          compare((simd, n) => new SGD(n, { ...config, simd }), 11 + k, lr);
        }
      });
    }
  },
});

Deno.test({
  name: "SIMD and scalar Adam give the same bits on every kind of float32",
  ignore: await ignoredWithout("wasm-simd"),
  fn: async (t) => {
    const configs: AdamOptions[] = [
      {},
      { weightDecay: 0.01 },
      { beta1: 0.5, beta2: 0.9, epsilon: 1e-3 },
      { beta1: 0, beta2: 0.999999, epsilon: 1e-30, weightDecay: 3 },
    ];
    for (const [k, config] of configs.entries()) {
      await t.step(JSON.stringify(config), () => {
        for (const lr of [1e-3, 0.5]) {
          compare((simd, n) => new Adam(n, { ...config, simd }), 101 + k, lr);
        }
      });
    }
  },
});
