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
import { fromBf16Bits, packBf16, roundToBf16 } from "../../util/bf16.ts";
import { Scratch, SIMD_TERMS } from "./_scratch.ts";
import {
  accumulate,
  blockOf,
  chunkLayout,
  type ChunkTarget,
  decodeChunk,
  encodeChunk,
} from "../_rank_order.ts";

/**
 * Elements per pipelined chunk: 512 KiB of float32 (1 MiB of the chain's float64
 * partial sums). Half as many frames as chunks of 2¹⁶, at the same speed:
 * between two processes on loopback NiN's average took 8.2–9.0 ms with these,
 * 7.5–8.9 ms with those (idle 2-core machine, three runs each). The wire
 * figures in docs/performance.md were taken with these.
 */
export const CHUNK = 1 << 17;

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

function float64s(bytes: Uint8Array): Float64Array {
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
  /**
   * Memory to reuse, and its SIMD kernels (the schedule resets it); default
   * fresh memory every average, and the scalar loops.
   */
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
  const { seq, n, total, out } = round;
  const scratch = round.scratch ?? new Scratch({ simd: false });
  scratch.reset();
  const terms = parts.filter((p) => p.weight !== 0)
    .map(({ data, weight }) => ({ data, weight: weight / total }));
  const last = ring.rank === ring.size - 1;
  for (let start = 0; start < n; start += CHUNK) {
    const end = Math.min(n, start + CHUNK);
    // Sent as they lie: each chunk's sums in memory of their own until the chain returns.
    const sums = float64s(scratch.take(8 * (end - start)));
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
  const { seq, n, total, out, everyone } = round;
  const scratch = round.scratch ?? new Scratch({ simd: false });
  scratch.reset();
  const bf16Length = round.bf16Length ?? 0;
  const { rank, size, peers } = mesh;
  const block = (b: number) => blockOf(b, { n, size });
  const vectors = parts.map((p) => p.data);
  const codec = bf16Codec(scratch);
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
        : encodeChunk(
          vectors,
          chunk,
          scratch.take(vectors.length * chunkLayout(chunk).bytes),
          codec.pack,
        );
      peers[b]!.send({ type: "scatter", seq, start }, payload);
    }
  }
  // Reduce this rank's block, chunk by chunk, every process's terms in rank order: with the SIMD
  // sum, all of them at once in the scratch memory; else added up as they arrive.
  const terms = everyone.reduce((count, e) => count + e.weights.length, 0);
  const simd = terms <= SIMD_TERMS ? scratch.kernels : undefined;
  const decoded = everyone.map((e, r) =>
    e.weights.map(() => scratch.floats(r === rank && bf16Length === 0 && !simd ? 0 : CHUNK))
  );
  const [from, to] = block(rank);
  const sums = simd ? scratch.floats(CHUNK) : float64s(scratch.take(8 * CHUNK));
  for (let start = from; start < to; start += CHUNK) {
    const end = Math.min(to, start + CHUNK);
    const length = end - start;
    const halves = Math.max(0, Math.min(end, bf16Length) - start);
    const added: Contribution[] = [];
    let started = false;
    for (let r = 0; r < size; r++) {
      const weights = everyone[r].weights;
      let data: Float32Array[];
      if (r === rank) {
        data = parts.map((p, j) => {
          if (halves === 0 && !simd) return p.data.subarray(start, end);
          const own = decoded[r][j].subarray(0, length);
          own.set(p.data.subarray(start, end));
          codec.roundHere(own.subarray(0, halves));
          return own;
        });
      } else {
        const link = peers[r]!;
        const frame = await wire.receive(link, "scatter", { seq, start });
        data = decoded[r].map((buffer) => buffer.subarray(0, length));
        const into = { into: data, at: 0, start, end, bf16Length, peer: link.peer };
        decodeInto(wire, frame, into, codec.unpack);
        frame.release?.();
      }
      const some = data.flatMap((values, j) =>
        weights[j] === 0 ? [] : [{ data: values, weight: weights[j] / total }]
      );
      if (simd) added.push(...some);
      else {started = accumulate(sums.subarray(0, length) as Float64Array, {
          terms: some,
          start: 0,
          started,
        });}
    }
    if (simd && added.length > 0) {
      simd.sum.average(added, { out: sums as Float32Array, start: 0, end: length });
    } else if (!started) sums.fill(0); // no terms at all (the memory is reused)
    // The average's bfloat16 head is rounded and packed where the sums are (the SIMD sums are in
    // the scratch memory, as the kernels need).
    const result32 = simd ? sums as Float32Array : undefined;
    if (result32) codec.roundHere(result32.subarray(0, halves));
    out.set(sums.subarray(0, length), start); // float64 sums rounded to float32, once
    if (!result32) codec.round(out.subarray(start, start + halves));
    // This block of `out` does not change before this returns: float32 values go as they lie.
    const chunk = { start, end, bf16Length };
    const pack = result32
      ? (_: Float32Array, at: number, into: Uint16Array) =>
        codec.packHere(result32.subarray(at - start, at - start + into.length), into)
      : codec.pack;
    const result = halves === 0
      ? float32Range(out, start, end)
      : encodeChunk([out], chunk, scratch.take(chunkLayout(chunk).bytes), pack);
    for (const link of peers) link?.send({ type: "gathered-block", seq, start }, result);
  }
  // Every other block, from its owner, into `out` (bfloat16 through the scratch memory).
  const landing = codec.simd && bf16Length > 0 ? scratch.floats(CHUNK) : undefined;
  for (let b = 0; b < size; b++) {
    if (b === rank) continue;
    const [from, to] = block(b);
    const link = peers[b]!;
    for (let start = from; start < to; start += CHUNK) {
      const end = Math.min(to, start + CHUNK);
      const frame = await wire.receive(link, "gathered-block", { seq, start });
      const chunk = { start, end, bf16Length, peer: link.peer };
      if (landing && start < bf16Length) {
        decodeInto(wire, frame, { ...chunk, into: [landing], at: 0 }, codec.unpack);
        out.set(landing.subarray(0, end - start), start);
      } else decodeInto(wire, frame, { ...chunk, into: [out], at: start }, fromBf16Bits);
      frame.release?.();
    }
  }
  await flushed(peers); // what was sent from `parts`, `out` and the scratch memory is written
}

/**
 * bfloat16 conversions for one average: with the SIMD kernels, directly on
 * vectors in the scratch memory (`roundHere`, `packHere`) or through staging
 * vectors there (`round`, `pack`; `unpack` writes into that memory only);
 * else the scalar loops.
 */
function bf16Codec(scratch: Scratch): {
  simd: boolean;
  round: (values: Float32Array) => void;
  roundHere: (values: Float32Array) => void;
  pack: (values: Float32Array, start: number, into: Uint16Array) => void;
  packHere: (values: Float32Array, into: Uint16Array) => void;
  unpack: (bits: Uint16Array, out: Float32Array, start: number) => void;
} {
  const kernels = scratch.kernels;
  if (kernels === undefined) {
    const round = (values: Float32Array) => roundToBf16(values);
    const packHere = (values: Float32Array, into: Uint16Array) => packBf16(values, 0, into);
    return { simd: false, round, roundHere: round, pack: packBf16, packHere, unpack: fromBf16Bits };
  }
  const [stage, stageBits] = [scratch.floats(CHUNK), scratch.take(2 * CHUNK)];
  const staged = new Uint16Array(stageBits.buffer, stageBits.byteOffset, CHUNK);
  const roundHere = (values: Float32Array) => {
    if (values.length > 0) kernels.bf16.round(values);
  };
  return {
    simd: true,
    round: (values) => {
      if (values.length === 0) return;
      const at = stage.subarray(0, values.length);
      at.set(values);
      kernels.bf16.round(at);
      values.set(at);
    },
    roundHere,
    pack: (values, start, into) => {
      const at = stage.subarray(0, into.length);
      at.set(values.subarray(start, start + into.length));
      kernels.bf16.pack(at, into);
    },
    packHere: (values, into) => kernels.bf16.pack(values, into),
    unpack: (bits, out, start) => {
      const at = staged.subarray(0, bits.length);
      at.set(bits);
      kernels.bf16.unpack(at, out.subarray(start, start + bits.length));
    },
  };
}

/**
 * Decodes `frame`'s vectors (see `encodeChunk`) into `into[j]` from index
 * `at`; a payload of the wrong size fails the group.
 */
function decodeInto(
  wire: Wire<ScheduleLink>,
  frame: Frame,
  chunk: ChunkTarget & { peer: string },
  unpack: (bits: Uint16Array, out: Float32Array, start: number) => void = fromBf16Bits,
): void {
  if (decodeChunk(frame.payload, chunk, unpack)) return;
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
  to: { into: Float64Array; peer: string },
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
