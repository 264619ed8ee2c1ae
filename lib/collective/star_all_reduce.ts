/**
 * The coordinator-centred ("star") all-reduce: every replica sends its vector
 * to a hub, the hub averages them in rank order and sends the result back.
 *
 * Simple and exact; the hub moves `2 × (replicas) × vector size` bytes per
 * step. Vectors travel as transferred buffers in both directions, never as
 * structured-clone copies, and the hub reuses the buffers it received for the
 * replies.
 *
 * @module
 */

import {
  type AllReduce,
  type AllReduceTiming,
  type Contribution,
  contributionParts,
  weightedAverage,
} from "./all_reduce.ts";
import type { Message } from "./channel.ts";
import type { Mailbox } from "./mailbox.ts";

/** A replica's contribution, replica → hub. */
export interface AllReduceRequest extends Message {
  type: "allreduce";
  /** Sequence number; every replica's n-th call carries the same one. */
  seq: number;
  /** Weight of this contribution, or of each of its parts. */
  weight: number | readonly number[];
  /** The local vector, or the parts' vectors back to back (transferred). */
  data: Float32Array<ArrayBuffer>;
}

/** The averaged vector, hub → replica. */
export interface AllReduceReply extends Message {
  type: "allreduce:result";
  /** Sequence number of the request answered. */
  seq: number;
  /** The average (transferred). */
  data: Float32Array<ArrayBuffer>;
  /** Milliseconds between this replica's contribution and the last one reaching the hub. */
  waitMs: number;
}

/**
 * The replica side of the star all-reduce.
 *
 * @example Inside a worker
 * ```ts ignore
 * import { StarAllReduce } from "./star_all_reduce.ts";
 *
 * const allReduce = new StarAllReduce(mailbox); // mailbox to the coordinator
 * const average = await allReduce.average(localGradient, localExamples);
 * ```
 */
export class StarAllReduce implements AllReduce {
  /** Where the last call spent its time: waiting at the hub for the others, and the rest. */
  lastTiming: AllReduceTiming = { waitMs: 0, reduceMs: 0 };
  readonly #hub: Mailbox;
  #seq = 0;

  /** Talks to the hub through `hub`. */
  constructor(hub: Mailbox) {
    this.#hub = hub;
  }

  /** Sends `data` to the hub (transferring its buffer) and waits for the average. */
  async average(
    data: Float32Array<ArrayBuffer>,
    weight: number | readonly number[],
  ): Promise<Float32Array<ArrayBuffer>> {
    const started = performance.now();
    const seq = this.#seq++;
    const request: AllReduceRequest = { type: "allreduce", seq, weight, data };
    this.#hub.send(request, [data.buffer]);
    const reply = await this.#hub.receive<AllReduceReply>("allreduce:result");
    if (reply.seq !== seq) {
      throw new Error(`all-reduce out of step: expected result ${seq}, got ${reply.seq}`);
    }
    const total = performance.now() - started;
    this.lastTiming = { waitMs: reply.waitMs, reduceMs: Math.max(0, total - reply.waitMs) };
    return reply.data;
  }
}

/** Options of a {@linkcode StarAllReduceHub}. */
export interface StarHubOptions {
  /**
   * Averages one round's contributions (every replica's parts, in rank order)
   * into `out` (the start of rank 0's buffer); default `weightedAverage`.
   */
  reduce?: (contributions: Contribution[], out: Float32Array) => Promise<Float32Array>;
  /** Told when `reduce` fails; the replicas then wait until the coordinator stops them. */
  onError?: (error: Error) => void;
}

/**
 * The hub side of the star all-reduce: serves the replicas reachable through
 * `replicas` (index = rank) until the mailboxes close.
 *
 * @example In the coordinator
 * ```ts ignore
 * import { StarAllReduceHub } from "./star_all_reduce.ts";
 *
 * const hub = new StarAllReduceHub(mailboxes);
 * // ... replicas call StarAllReduce.average(); the hub answers each round.
 * console.log(`${hub.rounds} rounds averaged`);
 * ```
 */
export class StarAllReduceHub {
  readonly #replicas: readonly Mailbox[];
  readonly #pending = new Map<number, (AllReduceRequest | undefined)[]>();
  readonly #arrivals = new Map<number, number[]>();
  readonly #options: StarHubOptions;
  #reducing: Promise<void> = Promise.resolve();
  #rounds = 0;

  /**
   * Starts handling `allreduce` messages on every mailbox. `options.reduce`
   * replaces the local average (e.g. to average across processes too).
   */
  constructor(replicas: readonly Mailbox[], options: StarHubOptions = {}) {
    this.#replicas = replicas;
    this.#options = options;
    replicas.forEach((mailbox, rank) => {
      mailbox.handle<AllReduceRequest>("allreduce", (request) => this.#collect(rank, request));
    });
  }

  /** Number of completed reductions. */
  get rounds(): number {
    return this.#rounds;
  }

  /**
   * The ranks whose contribution to the oldest unfinished reduction has not
   * arrived, or an empty list when none is under way: when the group stalls,
   * the replicas the others are waiting for.
   */
  missing(): number[] {
    if (this.#pending.size === 0) return [];
    const oldest = this.#pending.get(Math.min(...this.#pending.keys()))!;
    return oldest.flatMap((request, rank) => request === undefined ? [rank] : []);
  }

  #collect(rank: number, request: AllReduceRequest): void {
    const round = this.#pending.get(request.seq) ??
      Array.from<AllReduceRequest | undefined>({ length: this.#replicas.length });
    if (round[rank] !== undefined) {
      throw new Error(`rank ${rank} sent all-reduce ${request.seq} twice`);
    }
    round[rank] = request;
    this.#pending.set(request.seq, round);
    const arrivals = this.#arrivals.get(request.seq) ?? [];
    arrivals[rank] = performance.now();
    this.#arrivals.set(request.seq, arrivals);
    if (round.includes(undefined)) return;
    this.#pending.delete(request.seq);
    this.#arrivals.delete(request.seq);
    const requests = round as AllReduceRequest[];
    const reduce = this.#options.reduce;
    // Every request is the same number of vectors of one length: rank 0's tells it.
    const parts = typeof requests[0].weight === "number" ? 1 : requests[0].weight.length;
    const length = requests[0].data.length / parts;
    const contributions = requests.flatMap(({ data, weight }) =>
      contributionParts(data, { weight, length })
    );
    const out = requests[0].data.subarray(0, length);
    if (reduce === undefined) {
      this.#reply(request.seq, {
        requests,
        arrivals,
        result: weightedAverage(contributions, { out }),
      });
      return;
    }
    // Rounds are answered in order, each after the one before.
    this.#reducing = this.#reducing.then(async () => {
      const result = await reduce(contributions, out);
      this.#reply(request.seq, { requests, arrivals, result });
    }).catch((error) => this.#options.onError?.(error instanceof Error ? error : new Error(error)));
  }

  #reply(
    seq: number,
    round: { requests: AllReduceRequest[]; arrivals: number[]; result: Float32Array },
  ): void {
    const { requests, arrivals, result } = round;
    const last = Math.max(...arrivals);
    // Rank 0's buffer holds the result: answer it last, after copying from it.
    for (let r = this.#replicas.length - 1; r >= 0; r--) {
      const data = requests[r].data.subarray(0, result.length);
      if (r !== 0) data.set(result);
      const reply: AllReduceReply = {
        type: "allreduce:result",
        seq,
        data,
        waitMs: last - arrivals[r],
      };
      this.#replicas[r].send(reply, [data.buffer]);
    }
    this.#rounds++;
  }
}
