/**
 * A zero-copy all-reduce among workers of one process, over a
 * `SharedArrayBuffer`.
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
  type AllReduce,
  type AllReduceTiming,
  contributionParts,
  weightedAverage,
} from "./all_reduce.ts";

/** Int32 control words: barrier arrivals, barrier generation, abort flag. */
const CONTROL_WORDS = 4;
const ARRIVED = 0;
const GENERATION = 1;
const ABORTED = 2;
const CONTROL_BYTES = CONTROL_WORDS * 4;

/** How long one `Atomics.wait` sleeps before checking the abort flag again. */
const WAIT_SLICE_MS = 1000;

/**
 * Byte offsets in the buffer: control words; per replica, the number of
 * all-reduces it has entered (for diagnosing a stall); per part of every
 * replica, its weight; the slots (one per part, in rank order); the result.
 */
function layout(shape: SharedAllReduceShape) {
  const { worldSize, length } = shape;
  const slotCount = worldSize * (shape.parts ?? 1);
  const entered = CONTROL_BYTES;
  const weights = entered + 8 * Math.ceil(worldSize / 2); // keep the float64s aligned
  const slots = weights + 8 * slotCount;
  const result = slots + 4 * slotCount * length;
  return { entered, weights, slots, slotCount, result, end: result + 4 * length };
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
  return new SharedArrayBuffer(layout(shape).end);
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
  buffer: SharedArrayBuffer,
  shape: { worldSize: number },
): number[] {
  const entered = new Int32Array(buffer, CONTROL_BYTES, shape.worldSize);
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
export function abortSharedAllReduce(buffer: SharedArrayBuffer): void {
  const control = new Int32Array(buffer, 0, CONTROL_WORDS);
  Atomics.store(control, ABORTED, 1);
  Atomics.notify(control, GENERATION);
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
export class SharedAllReduce implements AllReduce {
  /** Where the last call spent its time: barrier waits, and copying and summing. */
  lastTiming: AllReduceTiming = { waitMs: 0, reduceMs: 0 };
  readonly #rank: number;
  readonly #worldSize: number;
  readonly #length: number;
  readonly #parts: number;
  readonly #control: Int32Array;
  readonly #entered: Int32Array;
  readonly #weights: Float64Array;
  readonly #slots: Float32Array[];
  readonly #result: Float32Array;

  /** Attaches replica `rank` to `buffer`. */
  constructor(buffer: SharedArrayBuffer, options: SharedAllReduceShape & { rank: number }) {
    const { rank, worldSize, length, parts = 1 } = options;
    if (buffer.byteLength !== createSharedAllReduceBuffer(options).byteLength) {
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
    this.#control = new Int32Array(buffer, 0, CONTROL_WORDS);
    this.#entered = new Int32Array(buffer, at.entered, worldSize);
    this.#weights = new Float64Array(buffer, at.weights, at.slotCount);
    this.#slots = Array.from(
      { length: at.slotCount },
      (_, r) => new Float32Array(buffer, at.slots + 4 * r * length, length),
    );
    this.#result = new Float32Array(buffer, at.result, length);
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
      const parts = contributionParts(data, { weight, length: this.#length });
      if (parts.length !== this.#parts) {
        throw new RangeError(`expected ${this.#parts} part(s), got ${parts.length}`);
      }
      if (this.#worldSize === 1) {
        const started = performance.now();
        const out = data.subarray(0, this.#length);
        if (parts.length === 1) {
          const total = parts[0].weight;
          if (!(total > 0)) throw new RangeError(`total weight must be positive, got ${total}`);
        } else weightedAverage(parts, { out });
        this.lastTiming = { waitMs: 0, reduceMs: performance.now() - started };
        return Promise.resolve(out);
      }
      const started = performance.now();
      Atomics.add(this.#entered, this.#rank, 1);
      parts.forEach((part, j) => {
        const slot = this.#rank * this.#parts + j;
        this.#slots[slot].set(part.data);
        this.#weights[slot] = part.weight;
      });
      let waitMs = this.#barrier(); // every slot written
      const start = Math.floor((this.#rank * this.#length) / this.#worldSize);
      const end = Math.floor(((this.#rank + 1) * this.#length) / this.#worldSize);
      const contributions = this.#slots.map((slot, s) => ({
        data: slot,
        weight: this.#weights[s],
      }));
      weightedAverage(contributions, { out: this.#result, start, end });
      waitMs += this.#barrier(); // every chunk reduced
      const out = data.subarray(0, this.#length);
      out.set(this.#result);
      this.lastTiming = { waitMs, reduceMs: performance.now() - started - waitMs };
      return Promise.resolve(out);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Blocks until all replicas arrive; returns the milliseconds spent waiting.
   * The last to arrive resets the count and advances the generation, which
   * releases the others.
   */
  #barrier(): number {
    const control = this.#control;
    this.#throwIfAborted();
    const arrived = performance.now();
    const generation = Atomics.load(control, GENERATION);
    if (Atomics.add(control, ARRIVED, 1) === this.#worldSize - 1) {
      Atomics.store(control, ARRIVED, 0);
      Atomics.add(control, GENERATION, 1);
      Atomics.notify(control, GENERATION);
      return 0;
    }
    while (Atomics.load(control, GENERATION) === generation) {
      this.#throwIfAborted();
      Atomics.wait(control, GENERATION, generation, WAIT_SLICE_MS);
    }
    return performance.now() - arrived;
  }

  #throwIfAborted(): void {
    if (Atomics.load(this.#control, ABORTED) !== 0) {
      throw new Error("shared all-reduce aborted: another replica failed");
    }
  }
}
