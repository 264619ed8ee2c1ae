/**
 * Small seeded pseudo-random generators, so that every replica can draw the
 * same sequence from the same seed without talking to the others.
 *
 * @module
 */

/**
 * Returns a generator of uniformly distributed 32-bit unsigned integers
 * (Mulberry32), fully determined by `seed`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mulberry32 } from "./random.ts";
 *
 * const a = mulberry32(7), b = mulberry32(7);
 * assert.ok(a() === b() && a() === b());
 * ```
 */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/**
 * Mixes several integers into one 32-bit seed, e.g. `(seed, epoch, rank)`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mixSeed } from "./random.ts";
 *
 * assert.ok(mixSeed([0, 1]) !== mixSeed([1, 0]));
 * ```
 */
export function mixSeed(parts: readonly number[]): number {
  let h = 0x811c9dc5;
  for (const part of parts) {
    h = Math.imul(h ^ (part >>> 0), 0x01000193) >>> 0;
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  }
  return h >>> 0;
}

/**
 * A uniformly random permutation of `0 … n-1` (Fisher–Yates with unbiased
 * rejection sampling), fully determined by `seed`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { randomPermutation } from "./random.ts";
 *
 * const p = randomPermutation(5, 42);
 * assert.ok([...p].sort().join() === "0,1,2,3,4");
 * ```
 */
export function randomPermutation(n: number, seed: number): number[] {
  const next = mulberry32(seed);
  const out = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const range = i + 1;
    const limit = 0x100000000 - (0x100000000 % range);
    let r = next();
    while (r >= limit) r = next();
    const j = r % range;
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}
