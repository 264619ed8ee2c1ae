/**
 * The two averaging schedules of the process group, as functions over links
 * that send frames and a wire that receives them — so that they can run over
 * TCP links or, in tests, over links in memory. Both add every element's
 * terms in global rank order into one float64 sum rounded once, so the result
 * equals `weightedAverage` over all replicas, on every rank, for any split of
 * the replicas into processes:
 *
 * ```
 * direct   reduce-scatter: the vector is cut into one block per rank; every
 *          rank sends its replicas' float32 values of block b straight to rank
 *          b, which adds all terms in rank order; all-gather: rank b sends its
 *          float32 block to every rank. Per rank 4·k·(n−1)/n bytes per element
 *          out plus 4·(n−1)/n back (k: replicas per process) — a reduce-scatter
 *          ring's 8·(n−1)/n for k = 1.
 * chain    float64 running sums flow rank 0 → 1 → … → n−1 chunk by chunk, each
 *          rank adding its replicas' terms as the chunk passes; the float32
 *          result flows back around the ring: 12 bytes per element on the
 *          busiest link whatever k.
 * ```
 *
 * A reduce-scatter *ring* is not used: it adds chunk c starting at rank c + 1,
 * in an order that depends on the chunk's owner, which would make the weights
 * depend on how replicas are spread over processes. Both schedules are
 * pipelined in {@linkcode CHUNK}-element chunks: all sends are queued at once,
 * so sending, receiving and summing overlap.
 *
 * @module
 */

import type { Contribution } from "../all_reduce.ts";
import { PeerError } from "../process_group.ts";
import type { Frame, FrameHeader } from "./frame.ts";
import { roundToBf16 } from "../../util/bf16.ts";
import {
  accumulate,
  blockOf,
  chunkLayout,
  type ChunkTarget,
  decodeChunk,
  encodeChunk,
} from "../_rank_order.ts";

/** Elements per pipelined chunk (512 KiB of float64 partial sums). */
export const CHUNK = 1 << 16;

/** A link as the schedules use it: it names its peer and queues frames to it. */
export interface ScheduleLink {
  /** Names the peer in errors. */
  readonly peer: string;
  /**
   * Queues a frame; frames arrive in the order they were sent. The payload
   * may be read until {@linkcode ScheduleLink.flushed} resolves.
   */
  send(header: FrameHeader, payload?: Uint8Array): void;
  /** Resolves once every queued frame has been written; absent: at once. */
  flushed?(): Promise<void>;
}

/**
 * Memory for what the averages send and sum, reused average after average.
 * A schedule waits until everything it sent is written before it returns,
 * so the next average may take the same memory: no fresh memory per chunk,
 * which costs more than the copies where page faults are slow.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Scratch } from "./schedules.ts";
 *
 * const scratch = new Scratch();
 * const a = scratch.take(12);
 * assert.equal(a.byteOffset % 8, 0);
 * scratch.reset();
 * assert.equal(scratch.take(12).buffer, a.buffer); // the same memory, once reset
 * ```
 */
export class Scratch {
  #memory = new ArrayBuffer(0);
  #used = 0;

  /** Frees everything taken so far (the average that took it has returned). */
  reset(): void {
    this.#used = 0;
  }

  /** `bytes` of memory, 8-byte aligned, not taken since the last reset. */
  take(bytes: number): Uint8Array<ArrayBuffer> {
    if (this.#used + bytes > this.#memory.byteLength) {
      // What was taken keeps the old memory; the next average starts in the larger one.
      this.#memory = new ArrayBuffer(Math.max(2 * this.#memory.byteLength, this.#used + bytes));
    }
    const view = new Uint8Array(this.#memory, this.#used, bytes);
    this.#used += 8 * Math.ceil(bytes / 8);
    return view;
  }
}

/** `bytes` of memory from `scratch`, or fresh without one. */
function take(scratch: Scratch | undefined, bytes: number): Uint8Array<ArrayBuffer> {
  return scratch?.take(bytes) ?? new Uint8Array(bytes);
}

function float32s(bytes: Uint8Array<ArrayBuffer>): Float32Array<ArrayBuffer> {
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

function float64s(bytes: Uint8Array<ArrayBuffer>): Float64Array<ArrayBuffer> {
  return new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8);
}

/** Waits until every frame sent on `links` is written. */
async function flushed(links: readonly (ScheduleLink | undefined)[]): Promise<void> {
  await Promise.all(links.map((link) => link?.flushed?.()));
}

/** How the schedules receive, and fail the group. */
export interface Wire<L extends ScheduleLink> {
  /** The next frame of `type` from `link`, with the header fields `expected`. */
  receive(link: L, type: string, expected: Record<string, number>): Promise<Frame>;
  /** Fails the group with `error` (the first failure wins); returns the error to throw. */
  fail(error: PeerError): PeerError;
}

/** One average: its sequence number, length, total weight and output. */
export interface Round {
  /** The average's sequence number (every frame carries it). */
  seq: number;
  /** Elements in the vector. */
  n: number;
  /** The sum of every replica's weight, over all processes. */
  total: number;
  /** Where the average goes. */
  out: Float32Array;
  /**
   * Elements `[0, bf16Length)` are bfloat16 (every term, and the average is
   * rounded to it): the direct schedule sends them as 16 bits. Default 0.
   */
  bf16Length?: number;
  /** Memory to reuse (reset by the schedule); default fresh memory every average. */
  scratch?: Scratch;
}

/**
 * The chain: float64 running sums flow rank 0 → n−1 chunk by chunk, each
 * rank adding its terms (`parts`); the float32 result flows back around the
 * ring, so that every rank ends with it in `round.out`.
 *
 * @example One rank alone: the chain is its own weighted average
 * ```ts
 * import assert from "node:assert/strict";
 * import { chainAverage } from "./schedules.ts";
 *
 * const out = new Float32Array(2);
 * const wire = { receive: () => Promise.reject(), fail: (e: Error) => e };
 * const last = { peer: "rank 0", send: () => {} }; // the result goes nowhere
 * await chainAverage(wire, { rank: 0, size: 1, next: last }, [
 *   { data: new Float32Array([1, 2]), weight: 1 },
 *   { data: new Float32Array([3, 4]), weight: 3 },
 * ], { seq: 0, n: 2, total: 4, out });
 * assert.deepEqual([...out], [2.5, 3.5]);
 * ```
 */
export async function chainAverage<L extends ScheduleLink>(
  wire: Wire<L>,
  ring: { rank: number; size: number; prev?: L; next: L },
  parts: readonly Contribution[],
  round: Round,
): Promise<void> {
  const { seq, n, total, out, scratch } = round;
  scratch?.reset();
  const terms = parts.filter((p) => p.weight !== 0)
    .map(({ data, weight }) => ({ data, weight: weight / total }));
  const last = ring.rank === ring.size - 1;
  for (let start = 0; start < n; start += CHUNK) {
    const end = Math.min(n, start + CHUNK);
    // Sent as they lie: each chunk's sums in memory of their own until the chain returns.
    const sums = float64s(take(scratch, 8 * (end - start)));
    let started = false;
    if (ring.rank > 0) {
      const frame = await wire.receive(ring.prev!, "partial", { seq, start });
      started = frame.header.started === true;
      copyPayload(wire, frame, { into: sums, peer: ring.prev!.peer });
    }
    started = accumulate(sums, { terms, start, started });
    if (!last) {
      ring.next.send(
        { type: "partial", seq, start, started },
        new Uint8Array(sums.buffer, sums.byteOffset, sums.byteLength),
      );
      continue;
    }
    out.set(sums, start); // rounded to float32, once
    ring.next.send({ type: "result", seq, start }, float32Range(out, start, end));
  }
  const forwarded: Frame[] = [];
  if (!last) {
    for (let start = 0; start < n; start += CHUNK) {
      const end = Math.min(n, start + CHUNK);
      const frame = await wire.receive(ring.prev!, "result", { seq, start });
      const peer = ring.prev!.peer;
      decodeInto(wire, frame, { into: [out], at: start, start, end, bf16Length: 0, peer });
      if (ring.rank < ring.size - 2) {
        ring.next.send(frame.header, frame.payload);
        forwarded.push(frame);
      } else frame.release?.();
    }
  }
  await flushed([ring.next]);
  for (const frame of forwarded) frame.release?.();
}

/**
 * The direct reduce-scatter: the vector is cut into one block per rank;
 * every rank sends its replicas' float32 values of block b straight to rank
 * b, which adds every term in global rank order (`everyone[r].weights`: rank
 * r's replicas' weights) and sends the float32 result to all (the
 * all-gather).
 *
 * @example One rank alone: its block is the whole vector
 * ```ts
 * import assert from "node:assert/strict";
 * import { directAverage } from "./schedules.ts";
 *
 * const out = new Float32Array(2);
 * const wire = { receive: () => Promise.reject(), fail: (e: Error) => e };
 * const parts = [{ data: new Float32Array([1, 2]), weight: 1 }];
 * await directAverage(wire, { rank: 0, size: 1, peers: [] }, parts, {
 *   seq: 0, n: 2, total: 1, out, everyone: [{ weights: [1] }],
 * });
 * assert.deepEqual([...out], [1, 2]);
 * ```
 */
export async function directAverage<L extends ScheduleLink>(
  wire: Wire<L>,
  mesh: { rank: number; size: number; peers: readonly (L | undefined)[] },
  parts: readonly Contribution[],
  round: Round & { everyone: readonly { weights: readonly number[] }[] },
): Promise<void> {
  const { seq, n, total, out, everyone, scratch } = round;
  scratch?.reset();
  const bf16Length = round.bf16Length ?? 0;
  const { rank, size, peers } = mesh;
  const block = (b: number) => blockOf(b, { n, size });
  const vectors = parts.map((p) => p.data);
  // Send every other block's chunks to their owners, all queued at once: float32 values of one
  // replica as they lie (they do not change before this returns), others packed.
  for (let b = 0; b < size; b++) {
    if (b === rank) continue;
    const [from, to] = block(b);
    for (let start = from; start < to; start += CHUNK) {
      const end = Math.min(to, start + CHUNK);
      const chunk = { start, end, bf16Length };
      const payload = vectors.length === 1 && start >= bf16Length
        ? float32Range(vectors[0], start, end)
        : encodeChunk(vectors, chunk, take(scratch, vectors.length * chunkLayout(chunk).bytes));
      peers[b]!.send({ type: "scatter", seq, start }, payload);
    }
  }
  // Reduce this rank's block, chunk by chunk, every process's terms in rank order. Received
  // chunks (and this rank's own, rounded) are decoded into buffers reused chunk after chunk.
  const decoded = everyone.map((e, r) =>
    e.weights.map(() => float32s(take(scratch, r === rank && bf16Length === 0 ? 0 : 4 * CHUNK)))
  );
  const [from, to] = block(rank);
  const allSums = float64s(take(scratch, 8 * Math.min(CHUNK, to - from)));
  for (let start = from; start < to; start += CHUNK) {
    const end = Math.min(to, start + CHUNK);
    const sums = allSums.subarray(0, end - start);
    let started = false;
    for (let r = 0; r < size; r++) {
      const weights = everyone[r].weights;
      let data: Float32Array[];
      if (r === rank) {
        data = parts.map((p, j) => {
          if (start >= bf16Length) return p.data.subarray(start, end);
          const own = decoded[r][j].subarray(0, end - start);
          own.set(p.data.subarray(start, end));
          roundToBf16(own, 0, Math.min(end, bf16Length) - start);
          return own;
        });
      } else {
        const link = peers[r]!;
        const frame = await wire.receive(link, "scatter", { seq, start });
        data = decoded[r].map((buffer) => buffer.subarray(0, end - start));
        decodeInto(wire, frame, { into: data, at: 0, start, end, bf16Length, peer: link.peer });
        frame.release?.();
      }
      const terms = data.flatMap((values, j) =>
        weights[j] === 0 ? [] : [{ data: values, weight: weights[j] / total }]
      );
      started = accumulate(sums, { terms, start: 0, started });
    }
    if (!started) sums.fill(0); // no terms at all (the memory is reused)
    out.set(sums, start); // rounded to float32, once
    roundToBf16(out, start, Math.min(end, Math.max(start, bf16Length)));
    // This block of `out` does not change before this returns: float32 values go as they lie.
    const chunk = { start, end, bf16Length };
    const result = start >= bf16Length
      ? float32Range(out, start, end)
      : encodeChunk([out], chunk, take(scratch, chunkLayout(chunk).bytes));
    for (const link of peers) link?.send({ type: "gathered-block", seq, start }, result);
  }
  // Every other block, from its owner, straight into `out`.
  for (let b = 0; b < size; b++) {
    if (b === rank) continue;
    const [from, to] = block(b);
    const link = peers[b]!;
    for (let start = from; start < to; start += CHUNK) {
      const end = Math.min(to, start + CHUNK);
      const frame = await wire.receive(link, "gathered-block", { seq, start });
      decodeInto(wire, frame, { into: [out], at: start, start, end, bf16Length, peer: link.peer });
      frame.release?.();
    }
  }
  await flushed(peers); // what was sent from `parts`, `out` and the scratch memory is written
}

/**
 * Decodes `frame`'s vectors (see `encodeChunk`) into `into[j]` from index
 * `at`; a payload of the wrong size fails the group.
 */
function decodeInto(
  wire: Wire<ScheduleLink>,
  frame: Frame,
  chunk: ChunkTarget & { peer: string },
): void {
  if (decodeChunk(frame.payload, chunk)) return;
  throw wire.fail(
    new PeerError(
      `${chunk.peer}: a ${frame.header.type} chunk of ${frame.payload.length} bytes, not ${
        chunk.into.length * chunkLayout(chunk).bytes
      }`,
    ),
  );
}

/** The bytes of `values[start, end)`. */
function float32Range(values: Float32Array, start: number, end: number): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset + start * 4, (end - start) * 4);
}

/**
 * Copies `frame`'s payload into `into`; a payload of another size fails the
 * group. The frame is released.
 */
function copyPayload(
  wire: Wire<ScheduleLink>,
  frame: Frame,
  to: { into: Float64Array<ArrayBuffer>; peer: string },
): void {
  const { into, peer } = to;
  if (frame.payload.length !== into.byteLength) {
    throw wire.fail(
      new PeerError(
        `${peer}: a ${frame.header.type} chunk of ${frame.payload.length} bytes, not ${into.byteLength}`,
      ),
    );
  }
  new Uint8Array(into.buffer, into.byteOffset, into.byteLength).set(frame.payload);
  frame.release?.();
}
