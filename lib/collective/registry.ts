/**
 * The all-reduce implementations by name, each as the two halves the trainer
 * needs: the coordinator's (`host`: set up what the workers share, wake them
 * if a peer fails, say who the others wait for) and a worker's (`join`: its
 * {@linkcode AllReduce}). The trainer names an algorithm only to look it up
 * here; a new transport is its own file plus one entry in
 * {@linkcode COLLECTIVES}.
 *
 * @module
 */

import type { AllReduce } from "./all_reduce.ts";
import type { ProcessGroup } from "./process_group.ts";
import type { Mailbox } from "./mailbox.ts";
import {
  abortSharedAllReduce,
  createSharedAllReduceMemory,
  SharedAllReduce,
  type SharedAllReduceBuffer,
  sharedAllReduceRounds,
} from "./shared_all_reduce.ts";
import { StarAllReduce, StarAllReduceHub } from "./star_all_reduce.ts";

/**
 * Names of the all-reduce implementations: `shared` (over shared memory,
 * workers of one process; the default), `star` (through the coordinator,
 * over message channels), and across processes with a
 * {@linkcode ProcessGroup} (through the coordinator): `tcp` (this library's
 * protocol) and `mpi` (the system's MPI library).
 */
export type AllReduceAlgorithm = "shared" | "star" | "tcp" | "mpi";

/** The coordinator's side of an all-reduce for one group of workers. */
export interface CollectiveHost {
  /** What every worker needs to join (structured-cloneable), sent at start-up. */
  readonly joinInfo: unknown;
  /** Wakes every worker blocked in the all-reduce and makes it fail: a peer has failed. */
  abort(): void;
  /** The ranks the others wait for in the all-reduce now (empty if none is under way). */
  laggards(): number[];
  /** Across processes: the other process this one's all-reduce waits for now, if any. */
  waitingFor?(): string | undefined;
}

/**
 * How processes agree to stop at the same step (`tcp`, `mpi` only): each average
 * carries this process's `requested()` flag, and `onRound(raised)` is told
 * after every average whether any process raised it.
 */
export interface StopAgreement {
  /** Whether this process was asked to stop. */
  requested(): boolean;
  /** Called after each average, in order, before the replicas receive it. */
  onRound(raised: boolean): void;
}

/** One all-reduce implementation: how the coordinator hosts it and a worker joins it. */
export interface CollectiveEntry {
  /**
   * In the coordinator, once every worker is ready. `processes` joins this
   * process's workers to those of the others (`tcp`, `mpi` only); `onError` is told
   * when averaging fails outside the workers (a peer process failed).
   */
  host(group: {
    worldSize: number;
    length: number;
    /** Parts each replica contributes per average (see `AllReduce`). Default 1. */
    parts?: number;
    /** Across processes: values `[0, bf16Length)` are bfloat16 (see `ProcessGroup.average`). Default 0. */
    bf16Length?: number;
    mailboxes: readonly Mailbox[];
    processes?: ProcessGroup;
    onError?: (error: Error) => void;
    stop?: StopAgreement;
  }): CollectiveHost;
  /** In a worker, with the host's `joinInfo` and its channel to the coordinator. */
  join(member: {
    rank: number;
    worldSize: number;
    length: number;
    /** Parts this replica contributes per average. Default 1. */
    parts?: number;
    joinInfo: unknown;
    mailbox: Mailbox;
  }): AllReduce;
}

/**
 * The all-reduce implementations: `shared` (zero-copy, over a
 * `SharedArrayBuffer`: workers of one process) and `star` (through the
 * coordinator over message channels). Both average in the same order and
 * give the same bits.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { COLLECTIVES } from "./registry.ts";
 *
 * const host = COLLECTIVES.shared.host({ worldSize: 2, length: 4, mailboxes: [] });
 * assert.ok(host.joinInfo instanceof WebAssembly.Memory); // SIMD sums over shared memory
 * assert.deepEqual(host.laggards(), []);
 * ```
 */
export const COLLECTIVES: Readonly<Record<AllReduceAlgorithm, CollectiveEntry>> = {
  shared: {
    host: ({ worldSize, length, parts }) => {
      const buffer = createSharedAllReduceMemory({ worldSize, length, parts });
      return {
        joinInfo: buffer,
        abort: () => abortSharedAllReduce(buffer),
        laggards: () => {
          const rounds = sharedAllReduceRounds(buffer, { worldSize });
          const ahead = Math.max(...rounds);
          return rounds.flatMap((round, rank) => (round < ahead ? [rank] : []));
        },
      };
    },
    join: ({ rank, worldSize, length, parts, joinInfo }) =>
      new SharedAllReduce(joinInfo as SharedAllReduceBuffer, { rank, worldSize, length, parts }),
  },
  star: {
    host: ({ mailboxes }) => {
      const hub = new StarAllReduceHub(mailboxes);
      return { joinInfo: undefined, abort: () => {}, laggards: () => hub.missing() };
    },
    join: ({ mailbox }) => new StarAllReduce(mailbox),
  },
  tcp: viaProcessGroup(),
  mpi: viaProcessGroup(),
};

/**
 * The entry of an all-reduce across processes: the coordinator gathers its
 * workers' gradients (as `star`) and averages them with the other processes
 * through the job's {@linkcode ProcessGroup} (TCP or MPI).
 */
function viaProcessGroup(): CollectiveEntry {
  return {
    host: ({ mailboxes, processes, onError, stop, bf16Length }) => {
      if (processes === undefined) {
        throw new Error("an all-reduce across processes needs a process group");
      }
      const hub = new StarAllReduceHub(mailboxes, {
        reduce: async (contributions, out) => {
          const average = await processes.average(contributions, {
            out,
            raise: stop?.requested(),
            bf16Length,
          });
          stop?.onRound(processes.raised);
          return average;
        },
        onError,
      });
      return {
        joinInfo: undefined,
        abort: () => {}, // the trainer tells the other processes, with the reason
        laggards: () => hub.missing(),
        waitingFor: () => (hub.missing().length === 0 ? processes.waitingFor : undefined),
      };
    },
    join: ({ mailbox }) => new StarAllReduce(mailbox),
  };
}

/**
 * The all-reduce algorithms a run can use.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ALL_REDUCE_ALGORITHMS } from "./registry.ts";
 *
 * assert.deepEqual([...ALL_REDUCE_ALGORITHMS], ["shared", "star", "tcp", "mpi"]);
 * ```
 */
export const ALL_REDUCE_ALGORITHMS: readonly AllReduceAlgorithm[] = Object.keys(
  COLLECTIVES,
) as AllReduceAlgorithm[];

/**
 * Whether `name` is an all-reduce across processes (`tcp`, `mpi`): it needs
 * a process group, which the job's launcher gives, not a checkpoint.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { acrossProcesses } from "./registry.ts";
 *
 * assert.equal(acrossProcesses("mpi"), true);
 * assert.equal(acrossProcesses("shared"), false);
 * ```
 */
export function acrossProcesses(name: string | undefined): boolean {
  return name === "tcp" || name === "mpi";
}
