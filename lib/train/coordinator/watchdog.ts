/**
 * Turning a stall into an error: a timer that fires when nothing has made
 * progress for longer than a limit, and whom to blame when it does.
 *
 * @module
 */

import { type Clock, realClock } from "../../util/clock.ts";

/** Options for {@linkcode Watchdog}. */
export interface WatchdogOptions {
  /** The current limit in milliseconds (asked at every check, so it may adapt). */
  limitMs: () => number;
  /** Called once when the limit is exceeded, with the milliseconds since the last progress. */
  onExpire: (idleMs: number) => void;
  /** How often to check. Default 1000 ms. */
  checkEveryMs?: number;
  /** Where time comes from. Default the real clock. */
  clock?: Clock;
}

/**
 * Calls `onExpire` once if {@linkcode Watchdog.touch} is not called for
 * longer than `limitMs()`. Its timer does not keep the process alive.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FakeClock } from "../../util/clock.ts";
 * import { Watchdog } from "./watchdog.ts";
 *
 * const clock = new FakeClock();
 * let idle = 0;
 * const watchdog = new Watchdog({ limitMs: () => 5000, onExpire: (ms) => idle = ms, clock });
 * clock.tick(4000);
 * watchdog.touch(); // progress: the 5 s start again
 * clock.tick(4000);
 * assert.equal(idle, 0);
 * clock.tick(2000);
 * assert.equal(idle, 6000);
 * watchdog.stop();
 * ```
 */
export class Watchdog {
  readonly #clock: Clock;
  #last: number;
  #stop: (() => void) | undefined;

  /** Starts watching. */
  constructor(options: WatchdogOptions) {
    this.#clock = options.clock ?? realClock;
    this.#last = this.#clock.now();
    this.#stop = this.#clock.every(options.checkEveryMs ?? 1000, () => {
      const idle = this.#clock.now() - this.#last;
      if (idle > options.limitMs()) {
        this.stop();
        options.onExpire(idle);
      }
    }, { unref: true });
  }

  /** Records progress. */
  touch(): void {
    this.#last = this.#clock.now();
  }

  /** Stops watching. */
  stop(): void {
    this.#stop?.();
    this.#stop = undefined;
  }
}

/** Whom a stall is blamed on: {@linkcode blameStall}'s answer. */
export interface StallBlame {
  /** The worker named first. */
  rank: number;
  /** Other workers as stuck as it. */
  alsoStuck: number[];
  /** The workers that waited for them. */
  waiting: number[];
}

/**
 * Whom to name when no step completes in time: the workers behind the others
 * in the steps they reported; failing that, the ones the others wait for in
 * the all-reduce (`allReduceLaggards`); failing that, every worker.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { blameStall } from "./watchdog.ts";
 *
 * // Rank 1 reported one step where the others reported three.
 * assert.deepEqual(blameStall({ reported: [3, 1, 3], allReduceLaggards: [] }), {
 *   rank: 1, alsoStuck: [], waiting: [0, 2],
 * });
 * // All reported as much; the all-reduce waits for rank 2.
 * assert.deepEqual(blameStall({ reported: [2, 2, 2], allReduceLaggards: [2] }), {
 *   rank: 2, alsoStuck: [], waiting: [0, 1],
 * });
 * ```
 */
export function blameStall(
  state: { reported: readonly number[]; allReduceLaggards: readonly number[] },
): StallBlame {
  const ranks = state.reported.map((_, rank) => rank);
  const most = Math.max(...state.reported);
  let stuck = ranks.filter((rank) => state.reported[rank] < most);
  if (stuck.length === 0) stuck = [...state.allReduceLaggards];
  if (stuck.length === 0 || stuck.length === ranks.length) stuck = ranks;
  return {
    rank: stuck[0],
    alsoStuck: stuck.slice(1),
    waiting: ranks.filter((rank) => !stuck.includes(rank)),
  };
}
