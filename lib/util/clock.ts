/**
 * Time as the library's watchers see it — the step watchdog, the peer-silence
 * limit of the process group — behind an interface, so that tests can move
 * it forward by hand instead of sleeping (as Deno std's `FakeTime`, which
 * this project cannot install).
 *
 * @module
 */

/** A source of time and of repeating timers. */
export interface Clock {
  /** Milliseconds, monotonic. */
  now(): number;
  /**
   * Calls `fn` every `ms` until the returned function is called. The timer
   * does not keep the process alive when `unref` is set.
   */
  every(ms: number, fn: () => void, options?: { unref?: boolean }): () => void;
}

/**
 * The real clock: `performance.now()` and `setInterval`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { realClock } from "./clock.ts";
 *
 * const before = realClock.now();
 * assert.ok(realClock.now() >= before);
 * const stop = realClock.every(1000, () => {}, { unref: true });
 * stop();
 * ```
 */
export const realClock: Clock = {
  now: () => performance.now(),
  every(ms, fn, options) {
    const timer = setInterval(fn, ms);
    if (options?.unref) Deno.unrefTimer(timer);
    return () => clearInterval(timer);
  },
};

/**
 * A clock that stands still until {@linkcode FakeClock.tick} moves it,
 * firing every timer that falls due on the way, in time order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FakeClock } from "./clock.ts";
 *
 * const clock = new FakeClock();
 * let fired = 0;
 * clock.every(100, () => fired++);
 * clock.tick(350);
 * assert.equal(fired, 3);
 * assert.equal(clock.now(), 350);
 * ```
 */
export class FakeClock implements Clock {
  #now = 0;
  #timers = new Set<{ due: number; ms: number; fn: () => void }>();

  /** Milliseconds since the clock was made. */
  now(): number {
    return this.#now;
  }

  /** Registers a repeating timer; returns the function that stops it. */
  every(ms: number, fn: () => void): () => void {
    const timer = { due: this.#now + ms, ms, fn };
    this.#timers.add(timer);
    return () => this.#timers.delete(timer);
  }

  /** Moves the clock `ms` forward, firing each timer as often as it falls due. */
  tick(ms: number): void {
    const end = this.#now + ms;
    for (;;) {
      let next: { due: number; ms: number; fn: () => void } | undefined;
      for (const timer of this.#timers) {
        if (timer.due <= end && (!next || timer.due < next.due)) next = timer;
      }
      if (!next) break;
      this.#now = next.due;
      next.due += next.ms;
      next.fn();
    }
    this.#now = end;
  }
}
