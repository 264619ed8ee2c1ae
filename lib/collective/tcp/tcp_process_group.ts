/**
 * The process group over TCP: the links the rendezvous leaves (a ring plus a
 * mesh of direct links, see `rendezvous.ts`) carry the gradients' averages
 * (`schedules.ts`), and rank 0's star carries small exchanges and broadcasts.
 *
 * Every average first shares every rank's contribution weights (through rank
 * 0), then runs one of the two schedules: the direct reduce-scatter when every
 * process has at most 2 replicas, the chain for more. Both add every
 * element's terms in global rank order into one float64 sum rounded once —
 * so the result equals `weightedAverage` over all replicas, on every rank,
 * and 2 processes × 2 replicas give the bits 1 × 4 gives.
 *
 * @module
 */

import { type Contribution, weightedAverage } from "../all_reduce.ts";
import { agreeOnRound } from "../_rank_order.ts";
import { PeerError, type ProcessGroup } from "../process_group.ts";
import type { Frame } from "./frame.ts";
import type { Link } from "./link.ts";
import { type GroupLinks, rendezvous, type RendezvousOptions } from "./rendezvous.ts";
import { chainAverage, directAverage, type Wire } from "./schedules.ts";
import { Scratch } from "./_scratch.ts";
import { roundToBf16 } from "../../util/bf16.ts";
import { decode, encode } from "npm:@msgpack/msgpack@3.1.3";

export { InterruptedRendezvous } from "./rendezvous.ts";

/** The exchange tag of the averages' weights. */
const AVERAGE = "average";

/**
 * Up to this many replicas in every process, averages use the direct
 * reduce-scatter (bytes per element on each link: 4·k·(n−1)/n out, plus the
 * all-gather); above it, the chain (12 per element, whatever k).
 */
const MESH_MAX_LOCAL = 2;

/** How to join a {@linkcode TcpProcessGroup}: the rendezvous's settings, and how to average. */
export interface TcpGroupOptions extends Omit<RendezvousOptions, "timeoutMs"> {
  /** How long to wait for every rank to join. Default 600 s. */
  rendezvousTimeoutMs?: number;
  /**
   * How averages travel: `"auto"` (default: the direct reduce-scatter when
   * every process has at most 2 replicas, else the chain), `"direct"` or
   * `"chain"` (to compare them). Every rank must give the same.
   */
  averaging?: "auto" | "direct" | "chain";
}

/**
 * A {@linkcode ProcessGroup} over TCP connections.
 *
 * @example Two processes (here two groups in one process, on loopback)
 * ```ts
 * import assert from "node:assert/strict";
 * import { importToken } from "./auth.ts";
 * import { TcpProcessGroup } from "./tcp_process_group.ts";
 *
 * const key = await importToken({ token: "a shared secret of some length" });
 * const port = Promise.withResolvers<number>();
 * const common = { size: 2, masterAddr: "127.0.0.1", key };
 * const zero = TcpProcessGroup.connect({ ...common, rank: 0, masterPort: 0, onListening: port.resolve });
 * const one = TcpProcessGroup.connect({ ...common, rank: 1, masterPort: await port.promise });
 * const groups = await Promise.all([zero, one]);
 * const [a, b] = await Promise.all([
 *   groups[0].average([{ data: new Float32Array([1, 2]), weight: 3 }]),
 *   groups[1].average([{ data: new Float32Array([5, 6]), weight: 1 }]),
 * ]);
 * assert.deepEqual([...a], [2, 3]);
 * assert.deepEqual([...b], [2, 3]);
 * await Promise.all(groups.map((g) => g.close()));
 * ```
 */
export class TcpProcessGroup implements ProcessGroup {
  readonly rank: number;
  readonly size: number;
  raised = false;
  waitingFor: string | undefined = undefined;
  /** Rank 0: a control link per other rank (index = rank). Others: [rank 0's]. */
  readonly #control: (Link | undefined)[];
  readonly #next: Link | undefined;
  readonly #prev: Link | undefined;
  /** A link to every other rank (index = rank), for the direct reduce-scatter. */
  readonly #peers: (Link | undefined)[];
  readonly #averaging: "auto" | "direct" | "chain";
  /** Per tag: the number of collectives of that sequence so far. */
  readonly #seqs = new Map<string, number>();
  /** Memory the averages reuse (they never overlap: each waits for the last to be written). */
  readonly #scratch = new Scratch();
  #error: PeerError | null = null;

  private constructor(
    parts: {
      rank: number;
      size: number;
      control: (Link | undefined)[];
      next?: Link;
      prev?: Link;
      peers?: (Link | undefined)[];
      averaging?: "auto" | "direct" | "chain";
    },
  ) {
    this.rank = parts.rank;
    this.size = parts.size;
    this.#control = parts.control;
    this.#next = parts.next;
    this.#prev = parts.prev;
    this.#peers = parts.peers ?? [];
    this.#averaging = parts.averaging ?? "auto";
  }

  /**
   * Joins the group: rendezvous, ring, and a first exchange that proves every
   * link works. Throws a `PeerError` (or `AuthError`) naming what failed.
   */
  static async connect(options: TcpGroupOptions): Promise<TcpProcessGroup> {
    const { rank, size } = options;
    if (
      !Number.isInteger(size) || size < 1 || !Number.isInteger(rank) || rank < 0 || rank >= size
    ) {
      throw new RangeError(`rank ${rank} of ${size} is not a place in a group`);
    }
    if (size === 1) return new TcpProcessGroup({ rank, size, control: [] });
    const failures: PeerError[] = [];
    const joined: { group?: TcpProcessGroup } = {}; // failures before it exists are kept
    const onFailure = (error: PeerError) =>
      joined.group ? joined.group.#fail(error) : failures.push(error);
    const links: GroupLinks = await rendezvous(
      { ...options, timeoutMs: options.rendezvousTimeoutMs },
      onFailure,
    );
    const group = joined.group = new TcpProcessGroup({
      rank,
      size,
      ...links,
      averaging: options.averaging,
    });
    if (failures.length > 0) group.#fail(failures[0]);
    await group.barrier(); // rank 0's links carry a frame both ways
    return group;
  }

  async average(
    parts: readonly Contribution[],
    options: { out?: Float32Array; raise?: boolean; bf16Length?: number } = {},
  ): Promise<Float32Array> {
    const length = parts[0]?.data.length ?? -1;
    const bf16Length = options.bf16Length ?? 0;
    if (this.size === 1) {
      this.raised = options.raise ?? false;
      return roundedAverage(weightedAverage(roundedTerms(parts, bf16Length), options), bf16Length);
    }
    const seq = this.#seqs.get(AVERAGE) ?? 0;
    const everyone = await this.exchange(
      { length, weights: parts.map((p) => p.weight), raise: options.raise ?? false, bf16Length },
      { tag: AVERAGE },
    );
    const agreed = agreeOnRound(everyone, { seq });
    if (agreed.error !== undefined) throw this.#fail(new PeerError(agreed.error));
    const { n, total } = agreed;
    this.raised = agreed.raised;
    const out = options.out ?? new Float32Array(n);
    const round = { seq, n, total, out, bf16Length, scratch: this.#scratch };
    // Few replicas per process: the bandwidth-optimal direct reduce-scatter; many: the chain.
    const most = Math.max(...everyone.map((e) => e.weights.length));
    const direct = this.#averaging === "direct" ||
      (this.#averaging === "auto" && most <= MESH_MAX_LOCAL);
    const wire: Wire<Link> = {
      receive: (link, type, expected) => this.#receive(link, type, expected),
      fail: (error) => this.#fail(error),
    };
    if (direct) {
      // It rounds terms and average itself, chunk by chunk, as it packs them.
      const mesh = { rank: this.rank, size: this.size, peers: this.#peers };
      await directAverage(wire, mesh, parts, { ...round, everyone });
      return out;
    }
    const ring = { rank: this.rank, size: this.size, prev: this.#prev, next: this.#next! };
    await chainAverage(wire, ring, roundedTerms(parts, bf16Length), round);
    return roundedAverage(out, bf16Length);
  }

  async broadcast(bytes: Uint8Array | undefined): Promise<Uint8Array> {
    const seq = this.#nextSeq("broadcast");
    if (this.rank === 0) {
      if (bytes === undefined) throw new RangeError("rank 0 must give the bytes to broadcast");
      for (const link of this.#control) link?.send({ type: "broadcast", seq }, bytes);
      // Sent from where they lie: the caller may change them once this resolves.
      await Promise.all(this.#control.map((link) => link?.flushed()));
      return bytes;
    }
    const frame = await this.#receive(this.#control[0]!, "broadcast", { seq });
    return frame.payload;
  }

  async exchange<T>(value: T, options: { tag?: string } = {}): Promise<T[]> {
    const tag = options.tag ?? "";
    const seq = this.#nextSeq(tag);
    if (this.size === 1) return [value];
    if (this.rank === 0) {
      const values: T[] = [value];
      for (let r = 1; r < this.size; r++) {
        const frame = await this.#receive(this.#control[r]!, `gather:${tag}`, { seq });
        values.push(decodeValue<T>(frame, this.#control[r]!.peer));
      }
      const all = new Uint8Array(encode(values));
      for (const link of this.#control) link?.send({ type: `gathered:${tag}`, seq }, all);
      return values;
    }
    this.#control[0]!.send({ type: `gather:${tag}`, seq }, new Uint8Array(encode(value)));
    const frame = await this.#receive(this.#control[0]!, `gathered:${tag}`, { seq });
    const values = decodeValue<T[]>(frame, this.#control[0]!.peer);
    if (!Array.isArray(values) || values.length !== this.size) {
      throw this.#fail(new PeerError(`${this.#control[0]!.peer}: malformed exchange`));
    }
    return values;
  }

  async barrier(): Promise<void> {
    await this.exchange(null, { tag: "barrier" });
  }

  abort(reason: string): void {
    if (this.#error) return;
    this.#error = new PeerError(`rank ${this.rank} stopped: ${reason}`);
    for (const link of this.#links()) void link.abort(reason);
  }

  /** Says goodbye on every link (peers may still read what was sent) and closes them. */
  async close(): Promise<void> {
    await Promise.all(this.#links().map((link) => link.finish()));
  }

  #nextSeq(tag: string): number {
    const seq = this.#seqs.get(tag) ?? 0;
    this.#seqs.set(tag, seq + 1);
    return seq;
  }

  #links(): Link[] {
    const all = [...this.#control, this.#next, this.#prev, ...this.#peers]
      .filter((l): l is Link => !!l);
    return [...new Set(all)];
  }

  /** The next frame of `type` from `link`, checked against `expected` header fields. */
  async #receive(link: Link, type: string, expected: Record<string, number>): Promise<Frame> {
    // What a peer sent before the group failed is still its answer (it may have closed since).
    // Once the group fails every link is aborted, which rejects what still waits on it.
    if (this.#error && !link.holds(type)) throw this.#error;
    let frame: Frame;
    try {
      this.waitingFor = link.peer;
      frame = await link.next(type);
    } catch (error) {
      // E.g. a peer that finished while this one still waits: the others must hear of it.
      throw this.#fail(error instanceof PeerError ? error : new PeerError(String(error)));
    } finally {
      this.waitingFor = undefined;
    }
    for (const [name, value] of Object.entries(expected)) {
      if (frame.header[name] !== value) {
        throw this.#fail(
          new PeerError(
            `${link.peer}: out of step (${type} with ${name} ${
              JSON.stringify(frame.header[name])
            }, expected ${value})`,
          ),
        );
      }
    }
    return frame;
  }

  /** Fails the group with `error` (the first failure wins) and tells the peers. */
  #fail(error: PeerError): PeerError {
    if (this.#error) return this.#error;
    this.#error = error;
    for (const link of this.#links()) {
      if (link.error === null) void link.abort(`rank ${this.rank} saw: ${error.message}`);
    }
    return error;
  }
}

function decodeValue<T>(frame: Frame, peer: string): T {
  try {
    return decode(frame.payload) as T;
  } catch (error) {
    throw new PeerError(`${peer}: malformed exchange (${(error as Error).message})`);
  }
}

/** `average` with its first `bf16Length` values rounded to bfloat16, in place. */
function roundedAverage(average: Float32Array, bf16Length: number): Float32Array {
  roundToBf16(average, 0, Math.min(bf16Length, average.length));
  return average;
}

/**
 * `parts` with every term's first `bf16Length` values rounded to bfloat16
 * (copies; `parts` itself without any): the direct schedule rounds chunk by
 * chunk instead, the chain and a lone process through these.
 */
function roundedTerms(parts: readonly Contribution[], bf16Length: number): readonly Contribution[] {
  if (bf16Length === 0) return parts;
  return parts.map(({ data, weight }) => {
    const rounded = data.slice();
    roundToBf16(rounded, 0, Math.min(bf16Length, rounded.length));
    return { data: rounded, weight };
  });
}
