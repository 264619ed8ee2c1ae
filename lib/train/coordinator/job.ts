/**
 * The job as one process's worker group sees it: this process alone, or one
 * process of several joined by a {@linkcode ProcessGroup}. The worker group
 * runs the same step loop either way; what differs — the replicas' global
 * ranks, where the start weights come from, whose figures make up an epoch's
 * metrics, and when a stop takes effect — is here, behind one interface.
 *
 * @module
 */

import { float32Bytes } from "../../collective/tcp/frame.ts";
import type { ProcessGroup } from "../../collective/process_group.ts";
import { DataError, ReplicaDivergenceError } from "../../errors.ts";
import type { EpochSums } from "../shared/checkpoint.ts";

/** How many steps the workers may run ahead of the last step every worker finished. */
export const GRANT_AHEAD = 2;

/** Where an epoch stands, as a stop rule sees it. */
export interface StopProgress {
  /** Steps in the epoch. */
  steps: number;
  /** Steps every worker has finished. */
  completed: number;
  /** Steps the workers may run (exclusive upper bound). */
  granted: number;
  /** Whether this process was asked to stop. */
  asked: boolean;
}

/** One process's view of the job. */
export interface Job {
  /** The processes joined, if there are several (the all-reduce needs them). */
  readonly processes: ProcessGroup | undefined;
  /** The global rank of this process's first replica. */
  firstRank(workers: number): number;
  /**
   * The weights every replica starts from: `given` (a checkpoint's) or, with
   * several processes, rank 0's `given ?? firstReady` on every process;
   * undefined: each process's local rank 0's own.
   */
  startWeights(
    given: Float32Array<ArrayBuffer> | undefined,
    firstReady: Float32Array<ArrayBuffer>,
  ): Promise<Float32Array<ArrayBuffer> | undefined>;
  /** `sums` over the whole job (under `tag`, a sequence of its own). */
  total(sums: EpochSums, tag: string): Promise<EpochSums>;
  /**
   * After an epoch: every process's `local` figures, checked for the same
   * weights (`checksum`) everywhere; throws a `ReplicaDivergenceError` naming
   * the process that differs.
   */
  endEpoch<T extends EpochSums & { checksum: string; stop: boolean }>(
    local: T,
    epoch: number,
  ): Promise<T[]>;
  /** Called as an epoch begins (a stop agreed on is counted in that epoch's averages). */
  beginEpoch(): void;
  /** Whether the workers may be granted more steps now. */
  mayGrant(progress: StopProgress): boolean;
  /** The last step the workers may be granted (the steps, or where all agreed to stop). */
  grantLimit(progress: StopProgress): number;
  /** Whether the workers have halted at the step boundary the stop takes effect at. */
  halted(progress: StopProgress): boolean;
  /**
   * Told after each average (in order) whether any process raised its stop
   * flag; returns whether the job now stops (several processes only).
   */
  onRound(raised: boolean, at: { fromStep: number; steps: number }): boolean;
  /** Whether the processes agreed to stop. */
  readonly stopAgreed: boolean;
}

/**
 * This process alone: a stop asked for takes effect at the last step already
 * granted (no further grant), so every worker stops at the same boundary.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { soloJob } from "./job.ts";
 *
 * const job = soloJob();
 * assert.equal(job.firstRank(4), 0);
 * assert.equal(job.halted({ steps: 10, completed: 3, granted: 3, asked: true }), true);
 * assert.equal(job.halted({ steps: 10, completed: 3, granted: 5, asked: true }), false);
 * ```
 */
export function soloJob(): Job {
  return {
    processes: undefined,
    firstRank: () => 0,
    startWeights: (given) => Promise.resolve(given),
    total: (sums) => Promise.resolve(sums),
    endEpoch: (local) => Promise.resolve([local]),
    beginEpoch: () => {},
    mayGrant: (progress) => !progress.asked,
    grantLimit: (progress) => progress.steps,
    // With every step granted, the epoch finishes and is checkpointed as usual.
    halted: (p) => p.asked && p.granted < p.steps && p.completed === p.granted,
    onRound: () => false,
    stopAgreed: false,
  };
}

/**
 * One process of several: each average carries every process's stop flag;
 * once one is raised, every process stops after the same step — two past
 * the one averaged, the furthest any process may already have granted.
 *
 * @example
 * ```ts ignore
 * const job = processJob(await joinProcesses(group, { options }));
 * ```
 */
export function processJob(processes: ProcessGroup): Job {
  let rounds = 0;
  let stopAt: number | null = null;
  let agreed = false;
  return {
    processes,
    firstRank: (workers) => processes.rank * workers,
    async startWeights(given, firstReady) {
      const weights = given ?? firstReady;
      const bytes = await processes.broadcast(
        processes.rank === 0 ? float32Bytes(weights) : undefined,
      );
      if (bytes.length !== weights.byteLength) {
        throw new DataError(
          `rank 0 holds ${bytes.length / 4} weights but this process's model has ${weights.length}`,
        );
      }
      const copy = new Float32Array(weights.length);
      new Uint8Array(copy.buffer).set(bytes);
      return copy;
    },
    async total(sums, tag) {
      return totalled(sums, await processes.exchange(sums, { tag }));
    },
    async endEpoch(local, epoch) {
      const everyone = await processes.exchange(local, { tag: "epoch" });
      const other = everyone.findIndex((process) => process.checksum !== local.checksum);
      if (other >= 0) {
        throw new ReplicaDivergenceError(
          `after epoch ${epoch}: the weights of process ${other} differ from process ${processes.rank}'s`,
        );
      }
      if (everyone.some((process) => process.stop)) agreed = true;
      return everyone;
    },
    beginEpoch() {
      rounds = 0;
      stopAt = null;
    },
    mayGrant: () => true,
    grantLimit: (progress) => Math.min(progress.steps, stopAt ?? Infinity),
    halted: (p) => stopAt !== null && stopAt < p.steps && p.completed === stopAt,
    onRound(raised, at) {
      const step = at.fromStep + rounds++;
      if (!raised || stopAt !== null) return false;
      agreed = true;
      stopAt = Math.min(at.steps, step + GRANT_AHEAD);
      return true;
    },
    get stopAgreed() {
      return agreed;
    },
  };
}

/**
 * `sums` with its loss sum, correct count and example count replaced by
 * those of `all` together (the times stay this process's).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { totalled } from "./job.ts";
 *
 * const mine = { lossSum: 1, correct: 2, count: 4, trainSeconds: 9, seconds: 10 };
 * const theirs = { lossSum: 3, correct: 1, count: 4, trainSeconds: 8, seconds: 8 };
 * assert.deepEqual(totalled(mine, [mine, theirs]), { ...mine, lossSum: 4, correct: 3, count: 8 });
 * ```
 */
export function totalled(sums: EpochSums, all: readonly EpochSums[]): EpochSums {
  return {
    ...sums,
    lossSum: all.reduce((sum, s) => sum + s.lossSum, 0),
    correct: all.reduce((sum, s) => sum + s.correct, 0),
    count: all.reduce((sum, s) => sum + s.count, 0),
  };
}
