/**
 * The process-group contract: the collectives the training processes of one
 * job use to act as one (as `torch.distributed`'s `ProcessGroup`). Each
 * process runs several replica workers of its own; the process group joins
 * the processes. A single-process run needs none.
 *
 * @module
 */

import type { Contribution } from "./all_reduce.ts";

/**
 * The training processes of one job: rank, size and the collective operations
 * every process calls in the same order (SPMD).
 *
 * {@linkcode ProcessGroup.average} generalises `weightedAverage` across
 * processes: each process gives its own replicas' contributions (in local rank
 * order) and every process receives, bit for bit, what `weightedAverage`
 * returns for all of them concatenated in process-rank order — so the result
 * does not depend on how the replicas are spread over processes.
 */
export interface ProcessGroup {
  /** This process's rank, from 0. */
  readonly rank: number;
  /** Number of processes. */
  readonly size: number;
  /**
   * The weighted average of every process's `parts`, in (process rank, local
   * rank) order, written to `options.out` (default: a new array).
   * `options.raise` raises this process's flag for this average (e.g. "I was
   * asked to stop"); {@linkcode ProcessGroup.raised} then tells every process
   * whether any raised it, so all can act at the same step.
   * `options.bf16Length` (the same on every process): the first that many
   * values of every term and of the average are rounded to bfloat16, and
   * travel as 16 bits where the schedule allows.
   */
  average(
    parts: readonly Contribution[],
    options?: { out?: Float32Array; raise?: boolean; bf16Length?: number },
  ): Promise<Float32Array>;
  /** Whether any process raised its flag in the last {@linkcode ProcessGroup.average}. */
  readonly raised: boolean;
  /** The peer a collective of this process waits for now, if any (e.g. `"rank 2 (10.0.0.3:…)"`). */
  readonly waitingFor: string | undefined;
  /** Rank 0's `bytes`, on every rank (others pass undefined). */
  broadcast(bytes: Uint8Array | undefined): Promise<Uint8Array>;
  /**
   * Every rank's `value` (MessagePack-encodable and small), in rank order.
   * Exchanges with different `options.tag`s are independent sequences, so
   * concurrent flows (e.g. the step loop and checkpointing) cannot cross.
   */
  exchange<T>(value: T, options?: { tag?: string }): Promise<T[]>;
  /** Resolves once every rank has called it. */
  barrier(): Promise<void>;
  /** Makes every pending and later call fail, and tells the peers why. */
  abort(reason: string): void;
  /** Closes every connection; resolves once they are closed. */
  close(): Promise<void>;
}

/**
 * A process of the group failed, went silent, closed its connection or broke
 * the protocol; the message names it. Every process of the group stops.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PeerError } from "./process_group.ts";
 *
 * const error = new PeerError("rank 2 (10.0.0.3:41234) closed its connection");
 * assert.equal(error.name, "PeerError");
 * ```
 */
export class PeerError extends Error {
  /** Creates the error; `message` names the peer and what happened. */
  constructor(message: string) {
    super(message);
    this.name = "PeerError";
  }
}
