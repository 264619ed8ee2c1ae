/**
 * The process group's averaging schedules over links in memory: no sockets,
 * no processes. Both equal `weightedAverage` over every replica, bit for bit,
 * on every rank, for any split of the replicas into processes; a chunk of the
 * wrong size fails the group by name.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type Contribution, weightedAverage } from "../lib/collective/all_reduce.ts";
import { PeerError } from "../lib/collective/process_group.ts";
import type { Frame, FrameHeader } from "../lib/collective/tcp/frame.ts";
import {
  chainAverage,
  CHUNK,
  directAverage,
  type ScheduleLink,
  type Wire,
} from "../lib/collective/tcp/schedules.ts";
import { Scratch } from "../lib/collective/tcp/_scratch.ts";
import { sha256Hex } from "../lib/util/sha256.ts";
import { roundToBf16 } from "../lib/util/bf16.ts";
import { randomVector } from "./helpers.ts";

/** A link from rank `from` to rank `to`; frames go to `to`'s inbox for `from`. */
interface MemoryLink extends ScheduleLink {
  from: number;
  to: number;
}

/**
 * `size` ranks whose links deliver frames in memory, in order, per type. With
 * `late`, as a socket: a payload is read when its frame is written, in a later
 * task, and `flushed` waits for that; a released frame's payload is poisoned
 * (NaN), as a reader's reused memory would be.
 */
function memoryMesh(size: number, tamper?: (frame: Frame) => Frame, options = { late: false }) {
  const inbox = new Map<string, Frame[]>();
  const waiting = new Map<string, (frame: Frame) => void>();
  const key = (to: number, from: number, type: string) => `${to}<${from}:${type}`;
  const deliver = (from: number, to: number, header: FrameHeader, payload: Uint8Array) => {
    // A copy, as a socket gives: the sender may reuse its buffer.
    const copy = payload.slice();
    let frame: Frame = {
      header: { ...header },
      payload: copy,
      release: options.late ? () => copy.fill(0xff) : undefined,
    };
    if (tamper) frame = tamper(frame);
    const k = key(to, from, String(header.type));
    const waiter = waiting.get(k);
    if (waiter) {
      waiting.delete(k);
      waiter(frame);
    } else inbox.set(k, [...(inbox.get(k) ?? []), frame]);
  };
  const link = (from: number, to: number): MemoryLink => {
    let written = Promise.resolve();
    return {
      from,
      to,
      peer: `rank ${to}`,
      send(header: FrameHeader, payload = new Uint8Array()) {
        if (!options.late) return deliver(from, to, header, payload);
        written = written.then(() => new Promise((resolve) => setTimeout(resolve, 0)))
          .then(() => deliver(from, to, header, payload));
      },
      flushed: () => written,
    };
  };
  const failures: PeerError[] = [];
  const wire: Wire<MemoryLink> = {
    receive(l, type, expected) {
      // `l` is rank l.from's link to rank l.to: receive what l.to sent to l.from.
      const k = key(l.from, l.to, type);
      const queued = inbox.get(k);
      const frame = queued?.length
        ? Promise.resolve(queued.shift()!)
        : new Promise<Frame>((resolve) => waiting.set(k, resolve));
      return frame.then((f) => {
        for (const [name, value] of Object.entries(expected)) {
          if (f.header[name] !== value) throw wire.fail(new PeerError(`${l.peer}: out of step`));
        }
        return f;
      });
    },
    fail(error) {
      failures.push(error);
      return error;
    },
  };
  const links = Array.from(
    { length: size },
    (_, r) => Array.from({ length: size }, (_, q) => q === r ? undefined : link(r, q)),
  );
  return { wire, links, failures };
}

const checksum = (values: Float32Array) => sha256Hex(values);

/**
 * `replicas` with their first `bf16Length` values rounded to bfloat16 (copies),
 * and their weighted average rounded alike: what a bfloat16 head averages to.
 */
function roundedHead(replicas: readonly Contribution[], bf16Length: number) {
  const rounded = replicas.map(({ data, weight }) => {
    const copy = data.slice();
    roundToBf16(copy, 0, bf16Length);
    return { data: copy, weight };
  });
  const average = weightedAverage(rounded);
  roundToBf16(average, 0, bf16Length);
  return { rounded, average };
}

// 6 replicas with uneven weights (one zero) and a length of several chunks plus a remainder.
const LENGTH = 2 * CHUNK + 17;
const DEFAULT_REPLICAS: Contribution[] = [3, 0, 5, 1, 2, 4].map((weight, r) => ({
  data: randomVector(LENGTH, r + 1),
  weight,
}));
const SPLITS = [[6], [2, 4], [1, 1, 4], [3, 3], [1, 2, 1, 2], [2, 2, 2], [1, 1, 1, 1, 1, 1]];

/** Runs `schedule` on every rank of `split` (replicas per rank); resolves with each rank's result. */
function runSplit(
  split: number[],
  schedule: "chain" | "direct",
  options: {
    replicas?: Contribution[];
    bf16Length?: number;
    sent?: { bytes: number };
    /** Each rank's scratch memory has the SIMD kernels (where available). Default true. */
    simd?: boolean;
  } = {},
): Promise<Float32Array[]> {
  const size = split.length;
  const REPLICAS = options.replicas ?? DEFAULT_REPLICAS;
  const { wire, links } = memoryMesh(size, (frame) => {
    if (options.sent) options.sent.bytes += frame.payload.length;
    return frame;
  });
  const total = REPLICAS.reduce((sum, p) => sum + p.weight, 0);
  const starts = split.map((_, r) => split.slice(0, r).reduce((a, b) => a + b, 0));
  const everyone = split.map((k, r) => ({
    weights: REPLICAS.slice(starts[r], starts[r] + k).map((p) => p.weight),
  }));
  return Promise.all(split.map(async (k, rank) => {
    const parts = REPLICAS.slice(starts[rank], starts[rank] + k);
    const out = new Float32Array(LENGTH);
    const scratch = new Scratch({ simd: options.simd ?? true });
    const round = { seq: 0, n: LENGTH, total, out, bf16Length: options.bf16Length, scratch };
    if (schedule === "direct") {
      await directAverage(wire, { rank, size, peers: links[rank] }, parts, { ...round, everyone });
    } else {
      const next = links[rank][(rank + 1) % size] ?? { peer: "nobody", send: () => {} };
      const prev = links[rank][(rank - 1 + size) % size];
      await chainAverage(wire, { rank, size, prev, next: next as MemoryLink }, parts, round);
    }
    return out;
  }));
}

Deno.test("in memory, the chain and the direct reduce-scatter are weightedAverage, bit for bit, for every split, with SIMD sums and without", async () => {
  assert.ok(new Scratch().kernels, "WebAssembly SIMD is available");
  const expected = await checksum(weightedAverage(DEFAULT_REPLICAS));
  for (const simd of [true, false]) {
    for (const schedule of ["chain", "direct"] as const) {
      for (const split of SPLITS) {
        const results = await runSplit(split, schedule, { simd });
        const sums = await Promise.all(results.map(checksum));
        const what = `${schedule}, split ${split}, simd ${simd}`;
        assert.deepEqual(sums, new Array(split.length).fill(expected), what);
      }
    }
  }
});

Deno.test("in memory, with payloads read late and memory reused, averages in a row on every split give weightedAverage's bits", async () => {
  // Each rank's gradient and result change as soon as its average returns, and frames are poisoned once
  // released: a schedule that returned before its frames were written, or read a frame after
  // releasing it, would give other bits.
  // The direct schedule also with a bfloat16 head, whose packed chunks are sent from the scratch.
  const runs = [["chain", 0], ["direct", 0], ["direct", CHUNK + 5]] as const;
  for (const [schedule, bf16Length] of runs) {
    for (const split of [[2, 4], [1, 1, 4], [1, 2, 1, 2]]) {
      const size = split.length;
      const { wire, links } = memoryMesh(size, undefined, { late: true });
      const scratches = split.map(() => new Scratch());
      const starts = split.map((_, r) => split.slice(0, r).reduce((a, b) => a + b, 0));
      const replicas = DEFAULT_REPLICAS.map(({ data, weight }) => ({ data: data.slice(), weight }));
      const total = replicas.reduce((sum, p) => sum + p.weight, 0);
      const everyone = split.map((k, r) => ({
        weights: replicas.slice(starts[r], starts[r] + k).map((p) => p.weight),
      }));
      for (let round = 0; round < 3; round++) {
        const expected = await checksum(roundedHead(replicas, bf16Length).average);
        const results = await Promise.all(split.map(async (k, rank) => {
          const parts = replicas.slice(starts[rank], starts[rank] + k);
          const out = new Float32Array(LENGTH);
          const r = { seq: round, n: LENGTH, total, out, bf16Length, scratch: scratches[rank] };
          if (schedule === "direct") {
            await directAverage(wire, { rank, size, peers: links[rank] }, parts, {
              ...r,
              everyone,
            });
          } else {
            const next = links[rank][(rank + 1) % size]!;
            const prev = links[rank][(rank - 1 + size) % size];
            await chainAverage(wire, { rank, size, prev, next }, parts, r);
          }
          const sum = checksum(out.slice());
          for (const part of parts) part.data.reverse(); // the next step's gradient, at once
          out.fill(NaN); // and the result used up
          return sum;
        }));
        const sums = await Promise.all(results);
        const what = `${schedule}, bf16 ${bf16Length}, ${split}, round ${round}`;
        assert.deepEqual(sums, new Array(size).fill(expected), what);
      }
    }
  }
});

Deno.test("in memory, a chunk of the wrong size fails the group, naming the peer", async () => {
  // Every "scatter" chunk loses its last byte on the way.
  const { wire, links, failures } = memoryMesh(
    2,
    (frame) =>
      frame.header.type === "scatter"
        ? { ...frame, payload: frame.payload.subarray(0, frame.payload.length - 1) }
        : frame,
  );
  const everyone = [{ weights: [1] }, { weights: [1] }];
  const run = (rank: number) =>
    directAverage(wire, { rank, size: 2, peers: links[rank] }, [DEFAULT_REPLICAS[rank]], {
      seq: 0,
      n: LENGTH,
      total: 2,
      out: new Float32Array(LENGTH),
      everyone,
    });
  const results = await Promise.allSettled([run(0), run(1)]);
  assert.ok(results.every((r) => r.status === "rejected"));
  assert.match(failures[0].message, /^rank [01]: a scatter chunk of \d+ bytes, not \d+$/);
});

Deno.test("in memory, with a bfloat16 head the direct schedule gives the rounded average on every split, sending about half the bytes", async () => {
  // The first CHUNK + 5 values are bfloat16 (the process group rounds every term's first values
  // before the schedule sees them); the rest stay float32. The head ends inside a chunk, after
  // an odd number of its values.
  const bf16Length = CHUNK + 5;
  const { rounded: replicas, average } = roundedHead(DEFAULT_REPLICAS, bf16Length);
  const expected = await checksum(average);
  for (const split of SPLITS.filter((s) => s.length > 1 && Math.max(...s) <= 2)) {
    const [full, half] = [{ bytes: 0 }, { bytes: 0 }];
    await runSplit(split, "direct", { replicas, sent: full });
    const results = await runSplit(split, "direct", { replicas, bf16Length, sent: half });
    const sums = await Promise.all(results.map(checksum));
    assert.deepEqual(sums, new Array(split.length).fill(expected), `split ${split}`);
    const scalar = await runSplit(split, "direct", { replicas, bf16Length, simd: false });
    const scalarSums = await Promise.all(scalar.map(checksum));
    assert.deepEqual(scalarSums, sums, `split ${split}, scalar conversions`);
    // Of 2·CHUNK + 17 values, CHUNK + 5 travel in 2 bytes instead of 4 (and a 2-byte pad).
    const ratio = half.bytes / full.bytes;
    assert.ok(Math.abs(ratio - (1 - (CHUNK + 5) / LENGTH / 2)) < 0.01, `split ${split}: ${ratio}`);
  }
});
