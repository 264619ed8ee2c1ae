/**
 * Error classes shared by the library and its command-line scripts.
 *
 * The scripts map {@linkcode UsageError} and {@linkcode DataError} to exit
 * code 2 (the user must change something) and every other error to exit
 * code 1.
 *
 * @module
 */

/**
 * A value as the user gave it, for error messages: strings in quotes (so that
 * `"32"` is told apart from `32`), numbers and other primitives as written,
 * arrays and plain objects as JSON.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { describeValue } from "./errors.ts";
 *
 * assert.equal(describeValue("32"), '"32"');
 * assert.equal(describeValue(32), "32");
 * assert.equal(describeValue(undefined), "undefined");
 * assert.equal(describeValue([1, 2]), "[1,2]");
 * ```
 */
export function describeValue(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "function") return "a function";
  if (typeof value === "symbol") return value.toString();
  if (value !== null && typeof value === "object") {
    try {
      const json = JSON.stringify(value);
      if (json !== undefined) return json.length > 60 ? `${json.slice(0, 57)}...` : json;
    } catch {
      // cyclic: fall through
    }
    return Object.prototype.toString.call(value);
  }
  return String(value);
}

/**
 * An option or flag has a value the library cannot work with.
 *
 * @example Reject an invalid worker count
 * ```ts
 * import assert from "node:assert/strict";
 * import { UsageError } from "./errors.ts";
 *
 * const workers = 0;
 * if (workers < 1) {
 *   const error = new UsageError(`--workers must be a positive integer, got ${workers}`);
 *   assert.ok(error.name === "UsageError");
 * }
 * ```
 */
export class UsageError extends Error {
  /** Creates a usage error with a one-line message. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * The data set is missing, truncated, corrupt or does not match its checksum.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DataError } from "./errors.ts";
 *
 * const error = new DataError("train-labels-idx1-ubyte.gz: bad magic number 2051, expected 2049");
 * assert.ok(error instanceof Error);
 * ```
 */
export class DataError extends Error {
  /** Creates a data error with a one-line message naming the file. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "DataError";
  }
}

/**
 * A worker replica threw, died or reported a problem. `rank` names which one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { WorkerError } from "./errors.ts";
 *
 * const error = new WorkerError(2, "out of memory");
 * assert.ok(error.message === "worker 2 failed: out of memory");
 * ```
 */
export class WorkerError extends Error {
  /** Rank of the worker that failed. */
  readonly rank: number;

  /** Creates an error for the worker with the given rank. */
  constructor(rank: number, reason: string) {
    super(`worker ${rank} failed: ${reason}`);
    this.name = "WorkerError";
    this.rank = rank;
  }
}

/**
 * Training was stopped on request (Ctrl-C, or an aborted `signal`) at a step
 * boundary. `checkpoint` is the file written first, if any.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { InterruptedError } from "./errors.ts";
 *
 * const error = new InterruptedError({ epochsDone: 1, stepsDone: 37, checkpoint: "ckpt.msgpack" });
 * assert.equal(error.message, "interrupted after 1 epoch(s) and 37 step(s); checkpoint ckpt.msgpack");
 * ```
 */
export class InterruptedError extends Error {
  /** The checkpoint written before stopping, if any. */
  readonly checkpoint: string | undefined;
  /** The signal that asked for the stop (`SIGINT`, `SIGTERM`), when the abort's reason named one. */
  readonly signal: string | undefined;

  /** Creates an interruption error for the given position. */
  constructor(
    where: { epochsDone: number; stepsDone: number; checkpoint?: string; signal?: string },
  ) {
    const saved = where.checkpoint ? `checkpoint ${where.checkpoint}` : "no checkpoint written";
    super(
      `interrupted after ${where.epochsDone} epoch(s) and ${where.stepsDone} step(s); ${saved}`,
    );
    this.name = "InterruptedError";
    this.checkpoint = where.checkpoint;
    this.signal = where.signal;
  }
}

/**
 * Replicas that must hold identical weights do not.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ReplicaDivergenceError } from "./errors.ts";
 *
 * const error = new ReplicaDivergenceError("after epoch 3: worker 1 weights differ from worker 0");
 * assert.ok(error.name === "ReplicaDivergenceError");
 * ```
 */
export class ReplicaDivergenceError extends Error {
  /** Creates a divergence error. */
  constructor(message: string) {
    super(`replicas diverged ${message}`);
    this.name = "ReplicaDivergenceError";
  }
}

/**
 * Training diverged: the loss or the averaged gradient of a step was not
 * finite (NaN or ±Infinity), or the weights to be checkpointed were not.
 * Nothing non-finite was applied or saved: the checkpoints on disk are the
 * last finite ones.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DivergedError } from "./errors.ts";
 *
 * const error = new DivergedError({ epoch: 1, step: 3, what: "the loss is NaN" });
 * assert.equal(error.message, "training diverged at epoch 1, step 3: the loss is NaN");
 * ```
 */
export class DivergedError extends Error {
  /** Epoch (from 1) of the step that diverged. */
  readonly epoch: number;
  /** The step (from 1) within the epoch. */
  readonly step: number;
  /** What was not finite. */
  readonly what: string;

  /** Creates the error for step `at.step` of epoch `at.epoch`, saying what was not finite. */
  constructor(at: { epoch: number; step: number; what: string }) {
    super(`training diverged at epoch ${at.epoch}, step ${at.step}: ${at.what}`);
    this.name = "DivergedError";
    this.epoch = at.epoch;
    this.step = at.step;
    this.what = at.what;
  }
}
