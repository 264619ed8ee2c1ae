/**
 * A barrier among the worker threads of one process over shared memory
 * (four int32 control words), which a coordinator can abort: the
 * shared-memory all-reduce's, and the all-reduce benchmark's.
 *
 * @module
 */

/** Int32 control words: barrier arrivals, barrier generation, abort flag. */
const CONTROL_WORDS = 4;
const ARRIVED = 0;
const GENERATION = 1;
const ABORTED = 2;

/** Bytes of a barrier's control words. */
export const BARRIER_BYTES = CONTROL_WORDS * 4;

/** How long one `Atomics.wait` sleeps before checking the abort flag again. */
const WAIT_SLICE_MS = 1000;

/**
 * Wakes every party waiting at the barrier at byte 0 of `buffer` and makes
 * it (and every later wait) throw.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { abortBarrier, BARRIER_BYTES, SharedBarrier } from "./_barrier.ts";
 *
 * const buffer = new SharedArrayBuffer(BARRIER_BYTES);
 * abortBarrier(buffer);
 * assert.throws(() => new SharedBarrier(buffer, 2).wait(), /aborted/);
 * ```
 */
export function abortBarrier(buffer: SharedArrayBuffer): void {
  const control = new Int32Array(buffer, 0, CONTROL_WORDS);
  Atomics.store(control, ABORTED, 1);
  Atomics.notify(control, GENERATION);
}

/**
 * One party's side of a barrier among `parties` threads, over the control
 * words at byte 0 of `buffer`. A wait blocks the thread (`Atomics.wait`).
 *
 * @example One party passes at once
 * ```ts
 * import assert from "node:assert/strict";
 * import { BARRIER_BYTES, SharedBarrier } from "./_barrier.ts";
 *
 * const barrier = new SharedBarrier(new SharedArrayBuffer(BARRIER_BYTES), 1);
 * assert.equal(barrier.wait(), 0);
 * ```
 */
export class SharedBarrier {
  readonly #control: Int32Array;
  readonly #parties: number;

  /** Attaches to the barrier at byte 0 of `buffer`. */
  constructor(buffer: SharedArrayBuffer, parties: number) {
    this.#control = new Int32Array(buffer, 0, CONTROL_WORDS);
    this.#parties = parties;
  }

  /**
   * Blocks until all parties arrive; returns the milliseconds spent waiting.
   * The last to arrive resets the count and advances the generation, which
   * releases the others. Throws once the barrier is aborted.
   */
  wait(): number {
    const control = this.#control;
    this.#throwIfAborted();
    const arrived = performance.now();
    const generation = Atomics.load(control, GENERATION);
    if (Atomics.add(control, ARRIVED, 1) === this.#parties - 1) {
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
