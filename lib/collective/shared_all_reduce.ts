/**
 * A zero-copy all-reduce among workers of one process, over shared memory: a
 * shared `WebAssembly.Memory`, whose reduction runs in WebAssembly SIMD
 * (`_simd_sum.ts`), or a plain `SharedArrayBuffer` (the scalar loop); both
 * give the same bits.
 *
 * Each round: every replica writes its vector (or its parts' vectors) once
 * into its own slots and its weights into the weights table; after a barrier, replica `r` reduces chunk
 * `r` of the vector across all slots (a reduce-scatter, in rank order, with
 * {@linkcode weightedAverage}'s arithmetic) into the shared result; after a
 * second barrier every replica copies the whole result out (the all-gather).
 * Every element is computed once, by one replica, so all replicas get the
 * same bits — the same bits as `StarAllReduce`.
 *
 * Barriers use `Atomics.wait`, so a replica blocks its own worker thread
 * while it waits. A coordinator that sees a replica fail calls
 * {@linkcode abortSharedAllReduce}, which wakes every waiting replica with an
 * error instead of leaving it blocked.
 *
 * @module
 */

import {
  type AllReduceTiming,
  averagedTerms,
  contributionParts,
  type ShardedAllReduce,
  weightedAverage,
} from "./all_reduce.ts";
import { SimdSum, TERM_BYTES } from "./_simd_sum.ts";
import { abortBarrier, BARRIER_BYTES, SharedBarrier } from "./_barrier.ts";

/** Shared memory of a {@linkcode SharedAllReduce}. */
export type SharedAllReduceBuffer = SharedArrayBuffer | WebAssembly.Memory;

/** The bytes of `buffer`. */
function bytesOf(buffer: SharedAllReduceBuffer): SharedArrayBuffer {
  return buffer instanceof WebAssembly.Memory ? buffer.buffer as SharedArrayBuffer : buffer;
}

const PAGE = 65536;
/** Pages a shared WebAssembly memory may have (4 GiB). */
const MAX_PAGES = 65536;

/**
 * Byte offsets in the buffer: control words; per replica, the number of
 * all-reduces it has entered (for diagnosing a stall) and whether it declined
 * to update its chunk in the last round; per part of every replica, its
 * weight; per replica, a table of the terms it sums (for the SIMD kernel);
 * the slots (one per part, in rank order); the result.
 */
function layout(shape: SharedAllReduceShape) {
  const { worldSize, length } = shape;
  const slotCount = worldSize * (shape.parts ?? 1);
  const entered = BARRIER_BYTES;
  const declined = entered + 4 * worldSize;
  const weights = 8 * Math.ceil((declined + 4 * worldSize) / 8); // the float64s aligned
  const tables = weights + 8 * slotCount;
  const slots = tables + worldSize * slotCount * TERM_BYTES;
  const result = slots + 4 * slotCount * length;
  return { entered, declined, weights, tables, slots, slotCount, result, end: result + 4 * length };
}

/** Shape of a shared all-reduce buffer. */
export interface SharedAllReduceShape {
  /** Number of replicas. */
  worldSize: number;
  /** Number of float32 elements per vector. */
  length: number;
  /** Parts every replica contributes in each round (see `AllReduce`). Default 1. */
  parts?: number;
}

/**
 * Allocates the shared memory for {@linkcode SharedAllReduce}: control words,
 * one weight per replica, one slot per replica and the result.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createSharedAllReduceBuffer } from "./shared_all_reduce.ts";
 *
 * const buffer = createSharedAllReduceBuffer({ worldSize: 4, length: 1000 });
 * assert.ok(buffer.byteLength >= 5 * 1000 * 4);
 * ```
 */
export function createSharedAllReduceBuffer(shape: SharedAllReduceShape): SharedArrayBuffer {
  checkShape(shape);
  return new SharedArrayBuffer(layout(shape).end);
}

/**
 * Allocates the shared memory for {@linkcode SharedAllReduce} as a shared
 * `WebAssembly.Memory`, so that the replicas sum with the SIMD kernel; a
 * `SharedArrayBuffer` where the runtime lacks WebAssembly SIMD or the vectors
 * pass 4 GiB. Both give the same bits. Workers receive the memory by
 * `postMessage`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createSharedAllReduceMemory } from "./shared_all_reduce.ts";
 *
 * const memory = createSharedAllReduceMemory({ worldSize: 2, length: 1000 });
 * assert.ok(memory instanceof WebAssembly.Memory);
 * ```
 */
export function createSharedAllReduceMemory(shape: SharedAllReduceShape): SharedAllReduceBuffer {
  checkShape(shape);
  const pages = Math.ceil(layout(shape).end / PAGE);
  if (pages > MAX_PAGES || SimdSum.unavailable()) return createSharedAllReduceBuffer(shape);
  return new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
}

function checkShape(shape: SharedAllReduceShape): void {
  const { worldSize, length, parts = 1 } = shape;
  if (!Number.isInteger(worldSize) || worldSize < 1) {
    throw new RangeError(`worldSize must be a positive integer, got ${worldSize}`);
  }
  if (!Number.isInteger(length) || length < 0) {
    throw new RangeError(`length must be a non-negative integer, got ${length}`);
  }
  if (!Number.isInteger(parts) || parts < 1) {
    throw new RangeError(`parts must be a positive integer, got ${parts}`);
  }
}

/**
 * How many all-reduces each replica has entered so far (index = rank): when
 * the group stalls, the replicas with the lowest count are the ones the
 * others are waiting for.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createSharedAllReduceBuffer, sharedAllReduceRounds } from "./shared_all_reduce.ts";
 *
 * const buffer = createSharedAllReduceBuffer({ worldSize: 3, length: 8 });
 * assert.deepEqual(sharedAllReduceRounds(buffer, { worldSize: 3 }), [0, 0, 0]);
 * ```
 */
export function sharedAllReduceRounds(
  buffer: SharedAllReduceBuffer,
  shape: { worldSize: number },
): number[] {
  const entered = new Int32Array(bytesOf(buffer), BARRIER_BYTES, shape.worldSize);
  return Array.from(entered, (_, rank) => Atomics.load(entered, rank));
}

/**
 * Wakes every replica waiting in a barrier of `buffer` and makes it (and
 * every later call) throw: for the coordinator, when a replica has failed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import {
 *   abortSharedAllReduce,
 *   createSharedAllReduceBuffer,
 *   SharedAllReduce,
 * } from "./shared_all_reduce.ts";
 *
 * const buffer = createSharedAllReduceBuffer({ worldSize: 2, length: 4 });
 * abortSharedAllReduce(buffer);
 * const replica = new SharedAllReduce(buffer, { rank: 0, worldSize: 2, length: 4 });
 * await assert.rejects(replica.average(new Float32Array(4), 1), /aborted/);
 * ```
 */
export function abortSharedAllReduce(buffer: SharedAllReduceBuffer): void {
  abortBarrier(bytesOf(buffer));
}

/**
 * The replica side of the shared-memory all-reduce. All replicas of a group
 * must be built over the same buffer, with the same `worldSize` and `length`,
 * and call {@linkcode SharedAllReduce.average} the same number of times.
 *
 * @example Two replicas in one thread would deadlock; in workers it looks like this
 * ```ts ignore
 * import { SharedAllReduce } from "./shared_all_reduce.ts";
 *
 * // `buffer` from createSharedAllReduceBuffer(), sent to every worker at start-up.
 * const allReduce = new SharedAllReduce(buffer, { rank, worldSize, length: gradient.length });
 * const average = await allReduce.average(gradient, examples);
 * ```
 */
export class SharedAllReduce implements ShardedAllReduce {
  /** Where the last call spent its time: barrier waits, and copying and summing. */
  lastTiming: AllReduceTiming = { waitMs: 0, reduceMs: 0 };
  readonly #rank: number;
  readonly #worldSize: number;
  readonly #length: number;
  readonly #parts: number;
  readonly #barrier: SharedBarrier;
  readonly #entered: Int32Array;
  readonly #declined: Int32Array;
  readonly #weights: Float64Array;
  readonly #slots: Float32Array[];
  readonly #result: Float32Array;
  /** The SIMD sum, over a shared WebAssembly memory. */
  readonly #simd: SimdSum | undefined;

  /** Attaches replica `rank` to `buffer`. */
  constructor(memory: SharedAllReduceBuffer, options: SharedAllReduceShape & { rank: number }) {
    const { rank, worldSize, length, parts = 1 } = options;
    const buffer = bytesOf(memory);
    const end = layout(options).end;
    const size = memory instanceof WebAssembly.Memory ? Math.ceil(end / PAGE) * PAGE : end;
    if (buffer.byteLength !== size) {
      throw new RangeError(
        `buffer does not fit ${worldSize} replicas × ${parts} part(s) × ${length} elements`,
      );
    }
    if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
      throw new RangeError(`rank must be an integer in [0, ${worldSize - 1}], got ${rank}`);
    }
    this.#rank = rank;
    this.#worldSize = worldSize;
    this.#length = length;
    this.#parts = parts;
    const at = layout(options);
    this.#barrier = new SharedBarrier(buffer, worldSize);
    this.#entered = new Int32Array(buffer, at.entered, worldSize);
    this.#declined = new Int32Array(buffer, at.declined, worldSize);
    this.#weights = new Float64Array(buffer, at.weights, at.slotCount);
    this.#slots = Array.from(
      { length: at.slotCount },
      (_, r) => new Float32Array(buffer, at.slots + 4 * r * length, length),
    );
    this.#result = new Float32Array(buffer, at.result, length);
    const table = { address: at.tables + rank * at.slotCount * TERM_BYTES, terms: at.slotCount };
    this.#simd = memory instanceof WebAssembly.Memory ? SimdSum.over(memory, table) : undefined;
  }

  /** The elements this replica reduces: chunk `rank` of `worldSize` nearly equal chunks. */
  get chunk(): { start: number; end: number } {
    return this.#chunkOf(this.#rank);
  }

  #chunkOf(rank: number): { start: number; end: number } {
    const [worldSize, length] = [this.#worldSize, this.#length];
    return {
      start: Math.floor((rank * length) / worldSize),
      end: Math.floor(((rank + 1) * length) / worldSize),
    };
  }

  /**
   * Contributes `data` with `weight` (one weight per part) and resolves with
   * the weighted average, written into the start of `data` itself (no buffer
   * changes hands). With one replica and one part, `data` is already the
   * average and comes back as it is.
   */
  average(
    data: Float32Array<ArrayBuffer>,
    weight: number | readonly number[],
  ): Promise<Float32Array<ArrayBuffer>> {
    try {
      return Promise.resolve(this.#round(data, weight).vector as Float32Array<ArrayBuffer>);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * As {@linkcode SharedAllReduce.average}, with this replica's chunk of the
   * average passed to `update` before the all-gather (see `ShardedAllReduce`).
   */
  averageAndUpdate(
    data: Float32Array<ArrayBuffer>,
    weight: number | readonly number[],
    update: (chunk: Float32Array) => boolean,
  ): Promise<{ vector: Float32Array; declined: { start: number; end: number }[] }> {
    try {
      return Promise.resolve(this.#round(data, weight, update));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Assembles every replica's `slice` at its chunk's start in the result
   * area; replica 0 resolves with the first `length` elements.
   */
  gather(slice: Float32Array, length: number): Promise<Float32Array<ArrayBuffer> | undefined> {
    try {
      const { start, end } = this.chunk;
      if (slice.length > end - start || length > this.#length) {
        throw new RangeError(
          `cannot gather ${slice.length} of chunk [${start}, ${end}) into ${length}`,
        );
      }
      if (this.#worldSize === 1) return Promise.resolve(slice.slice(0, length));
      this.#barrier.wait(); // nobody still reads the last round's result
      this.#result.set(slice, start);
      this.#barrier.wait(); // every slice written
      return Promise.resolve(this.#rank === 0 ? this.#result.slice(0, length) : undefined);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** One reduce-scatter, optional update of this replica's chunk, and all-gather. */
  #round(
    data: Float32Array<ArrayBuffer>,
    weight: number | readonly number[],
    update?: (chunk: Float32Array) => boolean,
  ): { vector: Float32Array; declined: { start: number; end: number }[] } {
    const parts = contributionParts(data, { weight, length: this.#length });
    if (parts.length !== this.#parts) {
      throw new RangeError(`expected ${this.#parts} part(s), got ${parts.length}`);
    }
    const started = performance.now();
    const out = data.subarray(0, this.#length);
    if (this.#worldSize === 1) {
      if (parts.length === 1) {
        const total = parts[0].weight;
        if (!(total > 0)) throw new RangeError(`total weight must be positive, got ${total}`);
      } else weightedAverage(parts, { out });
      const declined = update === undefined || update(out) ? [] : [this.#chunkOf(0)];
      this.lastTiming = { waitMs: 0, reduceMs: performance.now() - started };
      return { vector: out, declined };
    }
    Atomics.add(this.#entered, this.#rank, 1);
    parts.forEach((part, j) => {
      const slot = this.#rank * this.#parts + j;
      this.#slots[slot].set(part.data);
      this.#weights[slot] = part.weight;
    });
    let waitMs = this.#barrier.wait(); // every slot written
    const { start, end } = this.chunk;
    const contributions = this.#slots.map((slot, s) => ({ data: slot, weight: this.#weights[s] }));
    if (this.#simd) {
      this.#simd.average(averagedTerms(contributions), { out: this.#result, start, end });
    } else weightedAverage(contributions, { out: this.#result, start, end });
    if (update !== undefined) {
      const applied = update(this.#result.subarray(start, end));
      Atomics.store(this.#declined, this.#rank, applied ? 0 : 1);
    } else {
      // This chunk is final: copied out while it is still in this core's cache, and while the
      // others finish theirs.
      out.set(this.#result.subarray(start, end), start);
    }
    waitMs += this.#barrier.wait(); // every chunk reduced (and updated)
    // With an update the caller reads the shared result itself, before its next call (until
    // then no rank writes it): one copy of the vector less per step.
    if (update === undefined) {
      out.set(this.#result.subarray(0, start));
      out.set(this.#result.subarray(end), end);
    }
    const declined = update === undefined
      ? []
      : [...this.#declined].flatMap((flag, rank) => (flag === 0 ? [] : [this.#chunkOf(rank)]));
    this.lastTiming = { waitMs, reduceMs: performance.now() - started - waitMs };
    return { vector: update === undefined ? out : this.#result, declined };
  }
}
