/**
 * The process group over TCP: rendezvous at rank 0, a mesh of authenticated
 * connections (a ring plus direct links) for the gradients, and rank 0's star
 * for small exchanges and broadcasts.
 *
 * Rendezvous (as torchrun's `MASTER_ADDR:MASTER_PORT`): rank 0 listens at the
 * master address; every other rank connects (retrying until rank 0 is up),
 * proves the shared token, and says `hello` with its rank, the world size, the
 * job's configuration digest and the address of its own listener. Rank 0
 * refuses a wrong world size, configuration or rank, or a rank that already
 * joined, with one line each (sent to the refused process, told to `onNotice`)
 * and goes on waiting for the right one. Once all are in, rank 0 sends every
 * rank the table of addresses; rank `r` connects to rank `r + 1` (the last to
 * rank 0: the ring) and to ranks 1 … r − 2 (the rest of the mesh; rank 0's
 * links serve for rank 0), each connection authenticated again.
 *
 * Every average first shares every rank's contribution weights (through rank
 * 0), then runs one of two schedules, both adding every element's terms in
 * global rank order into one float64 sum rounded once — so the result equals
 * `weightedAverage` over all replicas, on every rank, and for any split of the
 * replicas into processes (2 processes × 2 replicas give the bits 1 × 4 gives):
 *
 * ```
 * direct   reduce-scatter: the vector is cut into one block per rank; every
 *          rank sends its replicas' float32 values of block b straight to rank
 *          b, which adds all terms in rank order; all-gather: rank b sends its
 *          float32 block to every rank. Per rank 4·k·(n−1)/n bytes per element
 *          out plus 4·(n−1)/n back (k: replicas per process) — a reduce-scatter
 *          ring's 8·(n−1)/n for k = 1. Used when every process has k ≤ 2.
 * chain    float64 running sums flow rank 0 → 1 → … → n−1 chunk by chunk, each
 *          rank adding its replicas' terms as the chunk passes; the float32
 *          result flows back around the ring: 12 bytes per element on the
 *          busiest link whatever k. Used for more replicas per process.
 * ```
 *
 * A reduce-scatter *ring* is not used: it adds chunk c starting at rank c + 1,
 * in an order that depends on the chunk's owner, which would make the weights
 * depend on how replicas are spread over processes. Both schedules are
 * pipelined in 64 Ki-element chunks: all sends are queued at once, so sending,
 * receiving and summing overlap.
 *
 * @module
 */

import { type Contribution, weightedAverage } from "../all_reduce.ts";
import { PeerError, type ProcessGroup } from "../process_group.ts";
import { acceptAuthenticated, AuthError, connectAuthenticated, writeAll } from "./auth.ts";
import {
  encodeFrame,
  type Frame,
  FrameError,
  type FrameHeader,
  type FrameReader,
} from "./frame.ts";
import { Link } from "./link.ts";
import { decode, encode } from "npm:@msgpack/msgpack@3.1.3";

/** The exchange tag of the averages' weights. */
const AVERAGE = "average";

/**
 * Up to this many replicas in every process, averages use the direct
 * reduce-scatter (bytes per element on each link: 4·k·(n−1)/n out, plus the
 * all-gather); above it, the chain (12 per element, whatever k).
 */
const MESH_MAX_LOCAL = 2;

/** Elements per pipelined chunk of the average (512 KiB of float64 partial sums). */
const CHUNK = 1 << 16;

/** How to join a {@linkcode TcpProcessGroup}. */
export interface TcpGroupOptions {
  /** This process's rank. */
  rank: number;
  /** Number of processes. */
  size: number;
  /** Rank 0's host: rank 0 listens there, the others connect there. */
  masterAddr: string;
  /** Rank 0's port. */
  masterPort: number;
  /** The shared secret (see `importToken`). */
  key: CryptoKey;
  /**
   * A digest of everything the processes must agree on (the run's
   * configuration); a process with another is refused at the rendezvous.
   */
  digest?: string;
  /** How long to wait for every rank to join. Default 600 s. */
  rendezvousTimeoutMs?: number;
  /**
   * How averages travel: `"auto"` (default: the direct reduce-scatter when
   * every process has at most 2 replicas, else the chain), `"direct"` or
   * `"chain"` (to compare them). Every rank must give the same.
   */
  averaging?: "auto" | "direct" | "chain";
  /** A peer that sends nothing (not even a heartbeat) for this long is dead. Default 60 s. */
  silenceMs?: number;
  /** Told about refused connections at the rendezvous (rank 0), one line each. */
  onNotice?: (line: string) => void;
  /** Aborting stops the rendezvous. */
  signal?: AbortSignal;
}

interface Hello {
  purpose: "join" | "ring" | "mesh";
  rank: number;
  size: number;
  digest: string;
  ringPort?: number;
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
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const masterPort = listener.addr.port;
 * listener.close();
 * const join = (rank: number) =>
 *   TcpProcessGroup.connect({ rank, size: 2, masterAddr: "127.0.0.1", masterPort, key });
 * const groups = await Promise.all([join(0), join(1)]);
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
    const deadline = performance.now() + (options.rendezvousTimeoutMs ?? 600_000);
    const links = rank === 0
      ? await rendezvousAsRoot(options, { deadline, onFailure })
      : await rendezvousAsMember(options, { deadline, onFailure });
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
    options: { out?: Float32Array; raise?: boolean } = {},
  ): Promise<Float32Array> {
    const length = parts[0]?.data.length ?? -1;
    if (this.size === 1) {
      this.raised = options.raise ?? false;
      return weightedAverage(parts, options);
    }
    const seq = this.#seqs.get(AVERAGE) ?? 0;
    const everyone = await this.exchange(
      { length, weights: parts.map((p) => p.weight), raise: options.raise ?? false },
      { tag: AVERAGE },
    );
    this.raised = everyone.some((e) => e.raise);
    const lengths = new Set(everyone.map((e) => e.length).filter((l) => l >= 0));
    if (lengths.size !== 1) {
      throw this.#fail(
        new PeerError(
          `all-reduce ${seq}: the processes give vectors of lengths ${
            everyone.map((e) => e.length).join(", ")
          }`,
        ),
      );
    }
    const total = everyone.flatMap((e) => e.weights).reduce((sum, w) => sum + w, 0);
    if (!(total > 0)) throw new RangeError(`total weight must be positive, got ${total}`);
    const n = [...lengths][0];
    const out = options.out ?? new Float32Array(n);
    const round = { seq, n, total, out };
    // Few replicas per process: the bandwidth-optimal direct reduce-scatter; many: the chain.
    const most = Math.max(...everyone.map((e) => e.weights.length));
    const direct = this.#averaging === "direct" ||
      (this.#averaging === "auto" && most <= MESH_MAX_LOCAL);
    if (direct) await this.#meshAverage(parts, { ...round, everyone });
    else await this.#chainAverage(parts, round);
    return out;
  }

  /**
   * The chain: float64 running sums flow rank 0 → n−1 chunk by chunk, each
   * rank adding its terms; the float32 result flows back around the ring.
   */
  async #chainAverage(
    parts: readonly Contribution[],
    round: { seq: number; n: number; total: number; out: Float32Array },
  ): Promise<void> {
    const { seq, n, total, out } = round;
    const terms = parts.filter((p) => p.weight !== 0)
      .map(({ data, weight }) => ({ data, weight: weight / total }));
    const last = this.rank === this.size - 1;
    for (let start = 0; start < n; start += CHUNK) {
      const end = Math.min(n, start + CHUNK);
      let sums = new Float64Array(end - start);
      let started = false;
      if (this.rank > 0) {
        const frame = await this.#receive(this.#prev!, "partial", { seq, start });
        started = frame.header.started === true;
        sums = this.#payloadAs(frame, {
          array: Float64Array,
          length: end - start,
          peer: this.#prev!.peer,
        });
      }
      started = accumulate(sums, { terms, start, started });
      if (!last) {
        this.#next!.send(
          { type: "partial", seq, start, started },
          new Uint8Array(sums.buffer),
        );
        continue;
      }
      out.set(sums, start); // rounded to float32, once
      this.#next!.send({ type: "result", seq, start }, float32Range(out, start, end));
    }
    if (!last) {
      for (let start = 0; start < n; start += CHUNK) {
        const end = Math.min(n, start + CHUNK);
        const frame = await this.#receive(this.#prev!, "result", { seq, start });
        this.#copyResult(frame, { out, start, end, peer: this.#prev!.peer });
        if (this.rank < this.size - 2) this.#next!.send(frame.header, frame.payload);
      }
    }
  }

  /**
   * The direct reduce-scatter: the vector is cut into one block per rank;
   * every rank sends its replicas' float32 values of block b straight to
   * rank b, which adds every term in global rank order and sends the float32
   * result to all (the all-gather). With one replica per process each rank
   * sends and receives 8·(n−1)/n bytes per element, as a reduce-scatter ring.
   */
  async #meshAverage(
    parts: readonly Contribution[],
    round: {
      seq: number;
      n: number;
      total: number;
      out: Float32Array;
      everyone: readonly { weights: number[] }[];
    },
  ): Promise<void> {
    const { seq, n, total, out, everyone } = round;
    const block = (
      b: number,
    ) => [Math.floor((b * n) / this.size), Math.floor(((b + 1) * n) / this.size)];
    // Send every other block's chunks to their owners, all queued at once.
    for (let b = 0; b < this.size; b++) {
      if (b === this.rank) continue;
      const [from, to] = block(b);
      for (let start = from; start < to; start += CHUNK) {
        const end = Math.min(to, start + CHUNK);
        const values = new Float32Array(parts.length * (end - start));
        parts.forEach((p, j) => values.set(p.data.subarray(start, end), j * (end - start)));
        this.#peers[b]!.send({ type: "scatter", seq, start }, new Uint8Array(values.buffer));
      }
    }
    // Reduce this rank's block, chunk by chunk, every process's terms in rank order.
    const [from, to] = block(this.rank);
    for (let start = from; start < to; start += CHUNK) {
      const end = Math.min(to, start + CHUNK);
      const sums = new Float64Array(end - start);
      let started = false;
      for (let r = 0; r < this.size; r++) {
        const weights = everyone[r].weights;
        let data: Float32Array[];
        if (r === this.rank) data = parts.map((p) => p.data.subarray(start, end));
        else {
          const link = this.#peers[r]!;
          const frame = await this.#receive(link, "scatter", { seq, start });
          const length = weights.length * (end - start);
          const values = this.#payloadAs(frame, { array: Float32Array, length, peer: link.peer });
          data = weights.map((_, j) => values.subarray(j * (end - start), (j + 1) * (end - start)));
        }
        const terms = data.flatMap((values, j) =>
          weights[j] === 0 ? [] : [{ data: values, weight: weights[j] / total }]
        );
        started = accumulate(sums, { terms, start: 0, started });
      }
      out.set(sums, start); // rounded to float32, once
      const result = float32Range(out, start, end);
      for (const link of this.#peers) link?.send({ type: "gathered-block", seq, start }, result);
    }
    // Every other block, from its owner.
    for (let b = 0; b < this.size; b++) {
      if (b === this.rank) continue;
      const [from, to] = block(b);
      const link = this.#peers[b]!;
      for (let start = from; start < to; start += CHUNK) {
        const end = Math.min(to, start + CHUNK);
        const frame = await this.#receive(link, "gathered-block", { seq, start });
        this.#copyResult(frame, { out, start, end, peer: link.peer });
      }
    }
  }

  /**
   * `frame`'s payload as `length` values of `array`'s type: an aligned copy
   * (it may sit at any offset). A payload of another size fails the group.
   */
  #payloadAs<T extends Float32Array<ArrayBuffer> | Float64Array<ArrayBuffer>>(
    frame: Frame,
    into: { array: new (length: number) => T; length: number; peer: string },
  ): T {
    const values = new into.array(into.length);
    if (frame.payload.length !== values.byteLength) {
      throw this.#fail(
        new PeerError(
          `${into.peer}: a ${frame.header.type} chunk of ${frame.payload.length} bytes, not ${values.byteLength}`,
        ),
      );
    }
    new Uint8Array(values.buffer).set(frame.payload);
    return values;
  }

  #copyResult(
    frame: Frame,
    into: { out: Float32Array; start: number; end: number; peer: string },
  ): void {
    const { out, start, end, peer } = into;
    if (frame.payload.length !== (end - start) * 4) {
      throw this.#fail(new PeerError(`${peer}: result chunk of the wrong size`));
    }
    float32Range(out, start, end).set(frame.payload);
  }

  async broadcast(bytes: Uint8Array | undefined): Promise<Uint8Array> {
    const seq = this.#nextSeq("broadcast");
    if (this.rank === 0) {
      if (bytes === undefined) throw new RangeError("rank 0 must give the bytes to broadcast");
      for (const link of this.#control) link?.send({ type: "broadcast", seq }, bytes);
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

/**
 * `sums[i] (+)= Σ w·x[start + i]` over `terms` in order, the first term
 * assigned unless `started` (so a lone −0 stays −0, as in `weightedAverage`);
 * returns whether anything was added so far.
 */
function accumulate(
  sums: Float64Array,
  at: { terms: readonly Contribution[]; start: number; started: boolean },
): boolean {
  let started = at.started;
  const { start } = at;
  for (const { data, weight } of at.terms) {
    if (started) { for (let i = 0; i < sums.length; i++) sums[i] += weight * data[start + i]; }
    else for (let i = 0; i < sums.length; i++) sums[i] = weight * data[start + i];
    started = true;
  }
  return started;
}

/** The bytes of `values[start, end)`. */
function float32Range(values: Float32Array, start: number, end: number): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset + start * 4, (end - start) * 4);
}

function decodeValue<T>(frame: Frame, peer: string): T {
  try {
    return decode(frame.payload) as T;
  } catch (error) {
    throw new PeerError(`${peer}: malformed exchange (${(error as Error).message})`);
  }
}

/** What a rendezvous leaves a rank: its links (see the fields of `TcpProcessGroup`). */
interface GroupLinks {
  control: (Link | undefined)[];
  next: Link;
  prev: Link;
  peers: (Link | undefined)[];
}

/** Rank 0: listen, admit every other rank once, send the table, close the ring. */
async function rendezvousAsRoot(
  options: TcpGroupOptions,
  run: { deadline: number; onFailure: (error: PeerError) => void },
): Promise<GroupLinks> {
  const { size, key } = options;
  const digest = options.digest ?? "";
  const silenceMs = options.silenceMs ?? 60_000;
  const listener = await listenWithRetry(options, run.deadline);
  const control: (Link | undefined)[] = new Array(size).fill(undefined);
  const ringAddresses: { host: string; port: number }[] = new Array(size);
  const joined = () => control.filter(Boolean).length;
  let prev: Link | undefined;
  const missing = () =>
    `rank(s) ${
      control.flatMap((link, r) => (r > 0 && !link ? [r] : [])).join(", ") || size - 1
    } did not join in time`;
  const stop = stopper(options.signal, run.deadline, () => closeQuietly(listener));
  try {
    // Until all have joined, then until the last rank's ring connection is in.
    while (joined() < size - 1 || prev === undefined) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch {
        const why = stop.reason();
        throw why instanceof InterruptedRendezvous ? why : new PeerError(missing());
      }
      const from = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
      const refuse = (reason: string, reader?: FrameReader) => {
        options.onNotice?.(`refused a connection from ${from}: ${reason}`);
        void refuseAndClose(conn, reason, reader);
      };
      let reader: FrameReader;
      let hello: Hello;
      try {
        reader = await acceptAuthenticated(conn, { key, peer: from });
        hello = await readHello(reader, from);
      } catch (error) {
        if (!(error instanceof AuthError || error instanceof FrameError)) throw error;
        refuse(error.message);
        continue;
      }
      const problem = helloProblem(hello, { size, digest, joined: control });
      if (problem) {
        refuse(problem, reader);
        continue;
      }
      const peer = `rank ${hello.rank} (${from})`;
      const link = new Link(conn, reader, { peer, silenceMs, onFailure: run.onFailure });
      if (hello.purpose === "ring") {
        prev = link; // the last rank's ring connection: it has the table already
        continue;
      }
      control[hello.rank] = link;
      ringAddresses[hello.rank] = { host: conn.remoteAddr.hostname, port: hello.ringPort! };
      link.send({ type: "welcome" });
      if (joined() === size - 1) {
        const table = ringAddresses.slice(1);
        for (const member of control) member?.send({ type: "table", table });
      }
    }
  } catch (error) {
    for (const link of [...control, prev]) void link?.abort((error as Error).message);
    throw error;
  } finally {
    stop.clear();
    closeQuietly(listener);
  }
  const next = await connectPeer(options, { to: 1, address: ringAddresses[1], silenceMs, run });
  return { control, next, prev: prev!, peers: control };
}

/** Rank r > 0: join at rank 0, learn the ring, connect to rank r + 1, accept rank r − 1. */
async function rendezvousAsMember(
  options: TcpGroupOptions,
  run: { deadline: number; onFailure: (error: PeerError) => void },
): Promise<GroupLinks> {
  const { rank, size, key } = options;
  const silenceMs = options.silenceMs ?? 60_000;
  const master = `rank 0 (${options.masterAddr}:${options.masterPort})`;
  const conn = await connectWithRetry(options, run.deadline);
  // The ring listener on the address this host reaches rank 0 from.
  const listener = Deno.listen({ hostname: conn.localAddr.hostname, port: 0 });
  let control: Link | undefined;
  const stop = stopper(options.signal, run.deadline, () => {
    closeQuietly(listener);
    closeQuietly(conn);
  });
  try {
    const reader = await connectAuthenticated(conn, { key, peer: master }).catch((error) => {
      throw new PeerError((error as Error).message);
    });
    const hello: Hello = {
      purpose: "join",
      rank,
      size,
      digest: options.digest ?? "",
      ringPort: listener.addr.port,
    };
    await sendRaw(conn, { type: "hello", ...hello });
    control = new Link(conn, reader, { peer: master, silenceMs, onFailure: run.onFailure });
    const joined = control;
    const answer = await Promise.race([joined.next("welcome"), joined.next("refused")]).catch(
      (error) => {
        throw stop.reason() ?? error;
      },
    );
    if (answer.header.type === "refused") {
      throw new PeerError(`rank 0 refused this process: ${String(answer.header.reason)}`);
    }
    const tableFrame = await joined.next("table").catch((error) => {
      throw stop.reason() ?? error;
    });
    const table = tableFrame.header.table as { host: string; port: number }[];
    const to = (rank + 1) % size;
    const address = to === 0
      ? { host: options.masterAddr, port: options.masterPort }
      : table[to - 1];
    // Besides the ring and rank 0's links, the mesh: rank s connects to every rank 1..s−2.
    const expected = new Map<number, "ring" | "mesh">([[rank - 1, "ring"]]);
    for (let s = rank + 2; s < size; s++) expected.set(s, "mesh");
    const meshTargets = Array.from({ length: Math.max(0, rank - 2) }, (_, i) => i + 1);
    const [next, accepted, ...mesh] = await Promise.all([
      connectPeer(options, { to, address, silenceMs, run }),
      acceptPeers(listener, { options, expected, silenceMs, run }),
      ...meshTargets.map((q) =>
        connectPeer(options, { to: q, address: table[q - 1], purpose: "mesh", silenceMs, run })
      ),
    ]).catch((error) => {
      throw stop.reason() ?? error;
    });
    const peers: (Link | undefined)[] = new Array(size).fill(undefined);
    peers[0] = joined;
    for (const [r, link] of accepted) if (r !== 0) peers[r] = link;
    if (to !== 0) peers[to] = next;
    meshTargets.forEach((q, i) => peers[q] = mesh[i]);
    return { control: [joined], next, prev: accepted.get(rank - 1)!, peers };
  } catch (error) {
    control?.close();
    closeQuietly(conn);
    throw error;
  } finally {
    stop.clear();
    closeQuietly(listener);
  }
}

/**
 * Rank 0's listener at the master address. A port still held by the
 * connections of a group that just failed (a restart), or a host name that
 * does not resolve yet (a Kubernetes pod's own headless-service name appears
 * once the pod runs), is tried again until the deadline; a wrong address is not.
 */
function listenWithRetry(
  options: TcpGroupOptions,
  deadline: number,
): Promise<Deno.Listener<Deno.TcpConn, Deno.NetAddr>> {
  const { masterAddr: hostname, masterPort: port } = options;
  return retrying(() => Deno.listen({ hostname, port }), {
    deadline,
    signal: options.signal,
    passing: (error) =>
      error instanceof Deno.errors.AddrInUse ||
      /failed to lookup address/.test((error as Error).message),
    fail: (error) =>
      new PeerError(`rank 0 cannot listen at ${hostname}:${port}: ${(error as Error).message}`),
  });
}

/** Connects to `rank 0` until it answers or the deadline passes. */
function connectWithRetry(options: TcpGroupOptions, deadline: number): Promise<Deno.TcpConn> {
  const { masterAddr: hostname, masterPort: port } = options;
  return retrying(() => Deno.connect({ hostname, port }), {
    deadline,
    signal: options.signal,
    passing: (error) =>
      error instanceof Deno.errors.ConnectionRefused ||
      error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.TimedOut,
    fail: (error, late) =>
      late
        ? new PeerError(`rank 0 did not answer at ${hostname}:${port} in time`)
        : new PeerError(`cannot reach rank 0 at ${hostname}:${port}: ${(error as Error).message}`),
  });
}

/**
 * `attempt()`'s result, trying again (after 0.1, 0.2, … up to 2 s) while it
 * fails with an error `passing` accepts. Throws `fail(error, late)` for
 * another error or once the deadline would pass (`late`), and an
 * `InterruptedRendezvous` once `signal` is aborted.
 */
async function retrying<T>(
  attempt: () => T | Promise<T>,
  policy: {
    deadline: number;
    signal?: AbortSignal;
    passing: (error: unknown) => boolean;
    fail: (error: unknown, late: boolean) => Error;
  },
): Promise<T> {
  for (let delay = 100;; delay = Math.min(2000, delay * 2)) {
    try {
      return await attempt();
    } catch (error) {
      if (!policy.passing(error)) throw policy.fail(error, false);
      if (policy.signal?.aborted) throw new InterruptedRendezvous();
      if (performance.now() + delay > policy.deadline) throw policy.fail(error, true);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

async function connectPeer(
  options: TcpGroupOptions,
  target: {
    to: number;
    address: { host: string; port: number };
    purpose?: "ring" | "mesh";
    silenceMs: number;
    run: { onFailure: (error: PeerError) => void };
  },
): Promise<Link> {
  const { host, port } = target.address;
  const peer = `rank ${target.to} (${host}:${port})`;
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname: host, port });
  } catch (error) {
    throw new PeerError(`cannot reach ${peer}: ${(error as Error).message}`);
  }
  const reader = await connectAuthenticated(conn, { key: options.key, peer }).catch((error) => {
    conn.close();
    throw new PeerError((error as Error).message);
  });
  const hello: Hello = {
    purpose: target.purpose ?? "ring",
    rank: options.rank,
    size: options.size,
    digest: options.digest ?? "",
  };
  await sendRaw(conn, { type: "hello", ...hello });
  return new Link(conn, reader, {
    peer,
    silenceMs: target.silenceMs,
    onFailure: target.run.onFailure,
  });
}

/** Accepts, on `listener`, one authenticated connection from each rank in `expected`. */
async function acceptPeers(
  listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>,
  accept: {
    options: TcpGroupOptions;
    /** Rank → what its connection is for. */
    expected: Map<number, "ring" | "mesh">;
    silenceMs: number;
    run: { onFailure: (error: PeerError) => void };
  },
): Promise<Map<number, Link>> {
  const { options, expected } = accept;
  const links = new Map<number, Link>();
  while (links.size < expected.size) {
    const conn = await listener.accept();
    const address = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
    try {
      const reader = await acceptAuthenticated(conn, { key: options.key, peer: address });
      const hello = await readHello(reader, address);
      if (
        expected.get(hello.rank) !== hello.purpose || links.has(hello.rank) ||
        hello.size !== options.size
      ) {
        throw new FrameError(`${address}: not a connection this rank expects`);
      }
      links.set(
        hello.rank,
        new Link(conn, reader, {
          peer: `rank ${hello.rank} (${address})`,
          silenceMs: accept.silenceMs,
          onFailure: accept.run.onFailure,
        }),
      );
    } catch (error) {
      if (!(error instanceof AuthError || error instanceof FrameError)) throw error;
      options.onNotice?.(`refused a connection from ${address}: ${error.message}`);
      void refuseAndClose(conn, error.message);
    }
  }
  return links;
}

async function readHello(reader: FrameReader, from: string): Promise<Hello> {
  const frame = await reader.read();
  if (frame === undefined) throw new FrameError(`${from}: closed the connection before hello`);
  const h = frame.header;
  if (
    h.type !== "hello" || !["join", "ring", "mesh"].includes(h.purpose as string) ||
    !Number.isInteger(h.rank) || !Number.isInteger(h.size) || typeof h.digest !== "string" ||
    (h.purpose === "join" && !Number.isInteger(h.ringPort))
  ) {
    throw new FrameError(`${from}: malformed hello`);
  }
  return h as unknown as Hello;
}

/** Why rank 0 refuses `hello`, or undefined if it is welcome. */
function helloProblem(
  hello: Hello,
  group: { size: number; digest: string; joined: readonly (Link | undefined)[] },
): string | undefined {
  if (hello.size !== group.size) {
    return `it says the job has ${hello.size} processes, rank 0 says ${group.size}`;
  }
  if (hello.rank < 1 || hello.rank >= group.size) {
    return `rank ${hello.rank} is not in 1..${group.size - 1}`;
  }
  if (hello.digest !== group.digest) {
    return `rank ${hello.rank} was started with another configuration than rank 0`;
  }
  if (hello.purpose === "ring" && hello.rank !== group.size - 1) {
    return `rank ${hello.rank} has no ring connection to rank 0`;
  }
  if (hello.purpose === "join" && group.joined[hello.rank] !== undefined) {
    return `rank ${hello.rank} has already joined (two processes were given the same rank)`;
  }
  return undefined;
}

async function sendRaw(conn: Deno.Conn, header: FrameHeader): Promise<void> {
  await writeAll(conn, encodeFrame(header));
}

function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch { /* already closed */ }
}

async function refuseAndClose(conn: Deno.Conn, reason: string, reader?: FrameReader) {
  try {
    if (reader) await sendRaw(conn, { type: "refused", reason });
  } catch { /* the peer is gone */ }
  try {
    conn.close();
  } catch { /* already closed */ }
}

/** Closes what blocks the rendezvous once `signal` aborts or the deadline passes. */
function stopper(signal: AbortSignal | undefined, deadline: number, close: () => void) {
  let why: PeerError | InterruptedRendezvous | undefined;
  const onAbort = () => {
    why ??= new InterruptedRendezvous();
    close();
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  const timer = setTimeout(() => {
    why ??= new PeerError("the group was not complete in time");
    close();
  }, Math.max(0, deadline - performance.now()));
  return {
    reason: () => why,
    clear: () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    },
  };
}

/** The rendezvous was stopped by its signal. */
export class InterruptedRendezvous extends Error {
  /** Creates the error. */
  constructor() {
    super("interrupted while waiting for the other processes");
    this.name = "InterruptedRendezvous";
  }
}
