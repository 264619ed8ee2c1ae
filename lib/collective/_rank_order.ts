/**
 * What every transport between processes shares to give the bits of one
 * process: the terms of a block summed in global rank order into float64 and
 * rounded once (as `weightedAverage`), the wire form of a chunk of vectors
 * (float32, or bfloat16 below `bf16Length`), and the agreement on one
 * average's shape that precedes it. The TCP schedules and the MPI process
 * group move bytes differently; they add with these.
 *
 * @module
 */

import type { Contribution } from "./all_reduce.ts";
import { fromBf16Bits, packBf16 } from "../util/bf16.ts";

/** What each process says of its part before an average. */
export interface RoundClaim {
  /** The length of its vectors (−1: it has none). */
  length: number;
  /** Its replicas' weights, in local rank order. */
  weights: number[];
  /** Its stop flag. */
  raise: boolean;
  /** How many leading values travel as bfloat16. */
  bf16Length: number;
}

/**
 * The shape every process agreed on — the vectors' length, the total weight,
 * whether any process raised its flag — or the one-line reason they do not
 * agree (`error`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { agreeOnRound } from "./_rank_order.ts";
 *
 * const claim = (length: number, weights: number[]) =>
 *   ({ length, weights, raise: false, bf16Length: 0 });
 * assert.deepEqual(agreeOnRound([claim(4, [1, 1]), claim(4, [2])], { seq: 0 }), {
 *   n: 4, total: 4, raised: false,
 * });
 * assert.match(agreeOnRound([claim(4, [1]), claim(5, [1])], { seq: 3 }).error!, /lengths 4, 5/);
 * ```
 */
export function agreeOnRound(
  everyone: readonly RoundClaim[],
  round: { seq: number },
): { n: number; total: number; raised: boolean; error?: undefined } | { error: string } {
  const lengths = new Set(everyone.map((e) => e.length).filter((l) => l >= 0));
  if (lengths.size !== 1) {
    return {
      error: `all-reduce ${round.seq}: the processes give vectors of lengths ${
        everyone.map((e) => e.length).join(", ")
      }`,
    };
  }
  if (new Set(everyone.map((e) => e.bf16Length)).size !== 1) {
    return {
      error: `all-reduce ${round.seq}: the processes send ${
        everyone.map((e) => e.bf16Length).join(", ")
      } values as bfloat16: give every process the same wire`,
    };
  }
  const total = everyone.flatMap((e) => e.weights).reduce((sum, w) => sum + w, 0);
  if (!(total > 0)) return { error: `total weight must be positive, got ${total}` };
  return { n: [...lengths][0], total, raised: everyone.some((e) => e.raise) };
}

/**
 * Rank `b`'s block of a vector of `n` values cut into `size` blocks:
 * `[from, to)`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { blockOf } from "./_rank_order.ts";
 *
 * assert.deepEqual([0, 1, 2].map((b) => blockOf(b, { n: 10, size: 3 })), [[0, 3], [3, 6], [6, 10]]);
 * ```
 */
export function blockOf(b: number, vector: { n: number; size: number }): [number, number] {
  const { n, size } = vector;
  return [Math.floor((b * n) / size), Math.floor(((b + 1) * n) / size)];
}

/**
 * The wire form of `vectors[j][start, end)`, one after the other: elements
 * below `bf16Length` rounded to bfloat16 and sent as their high 16 bits, the
 * rest as float32; each vector's bytes padded to a multiple of 4. Written to
 * `into` (at least that long, 4-byte aligned) if given, else to new bytes;
 * `pack` (default `packBf16`) rounds and packs the bfloat16 ones.
 *
 * @example Two bfloat16 values and one float32: 2 + 2 + 4 bytes
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeChunk } from "./_rank_order.ts";
 *
 * const bytes = encodeChunk([new Float32Array([1, -2, 0.1])], { start: 0, end: 3, bf16Length: 2 });
 * assert.equal(bytes.length, 8);
 * ```
 */
export function encodeChunk<B extends ArrayBufferLike = ArrayBuffer>(
  vectors: readonly Float32Array[],
  chunk: { start: number; end: number; bf16Length: number },
  into?: Uint8Array<B>,
  pack: (values: Float32Array, start: number, into: Uint16Array) => void = packBf16,
): Uint8Array<B> {
  const { start, end } = chunk;
  const layout = chunkLayout(chunk);
  const bytes = into ?? new Uint8Array(vectors.length * layout.bytes) as Uint8Array<B>;
  vectors.forEach((values, j) => {
    const at = j * layout.bytes;
    if (layout.halves > 0) {
      pack(values, start, new Uint16Array(bytes.buffer, bytes.byteOffset + at, layout.halves));
    }
    const floats = values.subarray(start + layout.halves, end);
    bytes.set(
      new Uint8Array(floats.buffer, floats.byteOffset, floats.byteLength),
      at + layout.floatsAt,
    );
  });
  return bytes;
}

/** Where a chunk's vectors are decoded: `into[j]` from index `at`, for the chunk `[start, end)`. */
export interface ChunkTarget {
  /** The vectors to write. */
  into: readonly Float32Array[];
  /** The index of `into[j]` the chunk's first value goes to. */
  at: number;
  /** The chunk's first index in the whole vector. */
  start: number;
  /** The index after its last. */
  end: number;
  /** Values `[0, bf16Length)` of the whole vector travel as bfloat16. */
  bf16Length: number;
}

/**
 * Decodes `payload`'s vectors (see {@linkcode encodeChunk}) into `into[j]`
 * from index `at` (`unpack`, default `fromBf16Bits`, widens the bfloat16
 * ones). Returns false, decoding nothing, if the payload is not the size
 * those vectors take.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeChunk, encodeChunk } from "./_rank_order.ts";
 *
 * const chunk = { start: 0, end: 3, bf16Length: 2 };
 * const out = new Float32Array(3);
 * assert.ok(decodeChunk(encodeChunk([new Float32Array([1, -2, 0.1])], chunk), { ...chunk, into: [out], at: 0 }));
 * assert.deepEqual([...out], [1, -2, Math.fround(0.1)]);
 * ```
 */
export function decodeChunk(
  payload: Uint8Array,
  chunk: ChunkTarget,
  unpack: (bits: Uint16Array, out: Float32Array, start: number) => void = fromBf16Bits,
): boolean {
  const { into, at, start, end } = chunk;
  const layout = chunkLayout(chunk);
  if (payload.length !== into.length * layout.bytes) return false;
  // Typed views need 4-byte alignment: a payload that lacks it is copied once.
  const aligned = payload.byteOffset % 4 === 0 ? payload : payload.slice();
  into.forEach((target, j) => {
    const offset = aligned.byteOffset + j * layout.bytes;
    if (layout.halves > 0) {
      unpack(new Uint16Array(aligned.buffer, offset, layout.halves), target, at);
    }
    const floats = end - start - layout.halves;
    target.set(
      new Float32Array(aligned.buffer, offset + layout.floatsAt, floats),
      at + layout.halves,
    );
  });
  return true;
}

/**
 * Where a vector's bfloat16 and float32 parts sit in its share of a chunk's
 * bytes, and how many bytes that share takes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { chunkLayout } from "./_rank_order.ts";
 *
 * assert.deepEqual(chunkLayout({ start: 0, end: 3, bf16Length: 1 }), { halves: 1, floatsAt: 4, bytes: 12 });
 * ```
 */
export function chunkLayout(chunk: { start: number; end: number; bf16Length: number }): {
  halves: number;
  floatsAt: number;
  bytes: number;
} {
  const { start, end, bf16Length } = chunk;
  const halves = Math.max(0, Math.min(end, bf16Length) - start);
  const floatsAt = 4 * Math.ceil(halves / 2);
  return { halves, floatsAt, bytes: floatsAt + 4 * (end - start - halves) };
}

/**
 * `sums[i] (+)= Σ w·x[start + i]` over `terms` in order, the first term
 * assigned unless `started` (so a lone −0 stays −0, as in `weightedAverage`);
 * returns whether anything was added so far.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { accumulate } from "./_rank_order.ts";
 *
 * const sums = new Float64Array(1);
 * const terms = [{ data: new Float32Array([-0]), weight: 0.5 }];
 * assert.equal(accumulate(sums, { terms, start: 0, started: false }), true);
 * assert.ok(Object.is(sums[0], -0));
 * ```
 */
export function accumulate(
  sums: Float64Array,
  at: { terms: readonly Contribution[]; start: number; started: boolean },
): boolean {
  let started = at.started;
  const { start } = at;
  for (const { data, weight } of at.terms) {
    if (started) { for (let i = 0; i < sums.length; i++) sums[i] += weight * data[start + i]; }
    else for (let i = 0; i < sums.length; i++) sums[i] = weight * data[start + i];
    started = true;
  }
  return started;
}
