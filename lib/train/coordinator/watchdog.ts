/**
 * Turning a stall into an error: a timer that fires when nothing has made
 * progress for longer than a limit.
 *
 * @module
 */

/** Options for {@linkcode Watchdog}. */
export interface WatchdogOptions {
  /** The current limit in milliseconds (asked at every check, so it may adapt). */
  limitMs: () => number;
  /** Called once when the limit is exceeded, with the milliseconds since the last progress. */
  onExpire: (idleMs: number) => void;
  /** How often to check. Default 1000 ms. */
  checkEveryMs?: number;
}

/**
 * Calls `onExpire` once if {@linkcode Watchdog.touch} is not called for
 * longer than `limitMs()`. Its timer does not keep the process alive.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Watchdog } from "./watchdog.ts";
 *
 * let idle = 0;
 * const watchdog = new Watchdog({ limitMs: () => 50, onExpire: (ms) => idle = ms, checkEveryMs: 10 });
 * await new Promise((resolve) => setTimeout(resolve, 200)); // no touch() meanwhile
 * assert.ok(idle >= 50);
 * watchdog.stop();
 * ```
 */
export class Watchdog {
  #last = performance.now();
  #timer: ReturnType<typeof setInterval> | undefined;

  /** Starts watching. */
  constructor(options: WatchdogOptions) {
    const timer = setInterval(() => {
      const idle = performance.now() - this.#last;
      if (idle > options.limitMs()) {
        this.stop();
        options.onExpire(idle);
      }
    }, options.checkEveryMs ?? 1000);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  /** Records progress. */
  touch(): void {
    this.#last = performance.now();
  }

  /** Stops watching. */
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
