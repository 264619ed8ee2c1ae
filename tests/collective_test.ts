import assert from "node:assert/strict";
import { averagedTerms, weightedAverage } from "../lib/collective/all_reduce.ts";
import { SimdSum } from "../lib/collective/_simd_sum.ts";
import { Bf16Simd } from "../lib/collective/_simd_bf16.ts";
import { packBf16, roundToBf16 } from "../lib/util/bf16.ts";
import { PostMessageChannel } from "../lib/collective/channel.ts";
import { WorkerThread } from "../lib/collective/worker_thread.ts";
import { Mailbox } from "../lib/collective/mailbox.ts";
import {
  abortSharedAllReduce,
  createSharedAllReduceBuffer,
  createSharedAllReduceMemory,
  SharedAllReduce,
  type SharedAllReduceBuffer,
  sharedAllReduceRounds,
} from "../lib/collective/shared_all_reduce.ts";
import { StarAllReduce, StarAllReduceHub } from "../lib/collective/star_all_reduce.ts";
import { contribution } from "./fixtures/shared_inputs.ts";
import { assertSameBits, awkwardVector } from "./helpers.ts";

Deno.test("weightedAverage weights each vector by its count", () => {
  const avg = weightedAverage([
    { data: new Float32Array([1, 10]), weight: 1 },
    { data: new Float32Array([4, 40]), weight: 2 },
    { data: new Float32Array([999, 999]), weight: 0 },
  ]);
  assert.deepEqual([...avg], [3, 30]);
});

Deno.test("weightedAverage of one contribution returns it bit for bit", () => {
  const data = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 1e-3);
  assert.deepEqual(weightedAverage([{ data, weight: 37 }]), data);
});

Deno.test("weightedAverage of gradients of equal-size shards is their mean", () => {
  const a = Float32Array.from({ length: 64 }, (_, i) => i / 7);
  const b = Float32Array.from({ length: 64 }, (_, i) => -i / 3);
  const avg = weightedAverage([{ data: a, weight: 16 }, { data: b, weight: 16 }]);
  avg.forEach((v, i) => assert.equal(v, Math.fround((a[i] + b[i]) / 2)));
});

Deno.test("weightedAverage rejects mismatched lengths and zero total weight", () => {
  assert.throws(
    () =>
      weightedAverage([{ data: new Float32Array(2), weight: 1 }, {
        data: new Float32Array(3),
        weight: 1,
      }]),
    /lengths 2 and 3/,
  );
  assert.throws(() => weightedAverage([{ data: new Float32Array(2), weight: 0 }]), /positive/);
});

function mailboxPair(): [Mailbox, Mailbox] {
  const { port1, port2 } = new MessageChannel();
  return [
    new Mailbox(new PostMessageChannel(port1, { close: () => port1.close() })),
    new Mailbox(new PostMessageChannel(port2, { close: () => port2.close() })),
  ];
}

Deno.test("Mailbox delivers by type, in arrival order, whether awaited before or after", async () => {
  const [a, b] = mailboxPair();
  try {
    b.send({ type: "x", n: 1 });
    b.send({ type: "y", n: 2 });
    b.send({ type: "x", n: 3 });
    assert.equal((await a.receive("y")).n, 2);
    assert.equal((await a.receive(["x", "y"])).n, 1);
    const later = a.receive("z");
    b.send({ type: "z", n: 4 });
    assert.equal((await later).n, 4);
    assert.equal((await a.receive("x")).n, 3);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("Mailbox.fail rejects pending and later receives", async () => {
  const [a, b] = mailboxPair();
  const pending = a.receive("never");
  a.fail(new Error("peer died"));
  await assert.rejects(pending, /peer died/);
  await assert.rejects(a.receive("other"), /peer died/);
  a.close();
  b.close();
});

Deno.test("star all-reduce: every replica gets the same weighted average; buffers are moved, not copied", async () => {
  const worldSize = 3;
  const length = 10_000;
  const hubSide: Mailbox[] = [];
  const replicas: StarAllReduce[] = [];
  const replicaSide: Mailbox[] = [];
  for (let rank = 0; rank < worldSize; rank++) {
    const [hub, replica] = mailboxPair();
    hubSide.push(hub);
    replicaSide.push(replica);
    replicas.push(new StarAllReduce(replica));
  }
  const hub = new StarAllReduceHub(hubSide);
  try {
    for (let round = 0; round < 3; round++) {
      const inputs = replicas.map((_, rank) =>
        Float32Array.from({ length }, (_, i) => Math.cos(i * (rank + 1) + round))
      );
      const weights = [5, 4, round === 2 ? 0 : 4]; // a replica with no examples weighs 0
      const expected = weightedAverage(
        inputs.map((data, r) => ({ data: data.slice(), weight: weights[r] })),
      );
      const results = await Promise.all(
        replicas.map((r, rank) => r.average(inputs[rank], weights[rank])),
      );
      for (const input of inputs) assert.equal(input.byteLength, 0, "input buffer was transferred");
      for (const result of results) assert.deepEqual(result, expected);
    }
    assert.equal(hub.rounds, 3);
  } finally {
    [...hubSide, ...replicaSide].forEach((m) => m.close());
  }
});

/** What a shared all-reduce test worker posts back. */
interface Reply {
  round?: number;
  result?: Float32Array;
  declined?: { start: number; end: number }[];
  gathered?: Float32Array;
  error?: string;
}

function startSharedWorkers(
  worldSize: number,
  message: {
    buffer: SharedAllReduceBuffer;
    length: number;
    rounds: number;
    stall?: number;
    parts?: number;
    update?: boolean;
  },
) {
  const url = new URL("./fixtures/shared_all_reduce_worker.ts", import.meta.url);
  return Array.from({ length: worldSize }, (_, rank) => {
    const thread = new WorkerThread(url, { name: `shared-all-reduce-${rank}` });
    const messages: Reply[] = [];
    const received = new Promise<typeof messages>((resolve) => {
      thread.onMessage = (m) => {
        const reply = m as Reply;
        messages.push(reply);
        if (reply.error || messages.length === message.rounds) resolve(messages);
      };
      thread.onError = (error) => resolve([{ error: error.message }]);
    });
    thread.send({ type: "run", ...message, rank, worldSize, stall: message.stall === rank });
    return { thread, received };
  });
}

Deno.test("shared-memory all-reduce: every worker gets the star all-reduce's bits", async () => {
  const worldSize = 4;
  const length = 100_003; // not a multiple of the world size
  const rounds = 3;
  const buffer = createSharedAllReduceBuffer({ worldSize, length });
  const workers = startSharedWorkers(worldSize, { buffer, length, rounds });
  try {
    const results = await Promise.all(workers.map((w) => w.received));
    for (let round = 0; round < rounds; round++) {
      const expected = weightedAverage(
        Array.from({ length: worldSize }, (_, rank) => contribution(rank, round, length)),
      );
      for (const messages of results) {
        assert.equal(messages[round].error, undefined);
        assert.equal(messages[round].round, round);
        assert.deepEqual(messages[round].result, expected);
      }
    }
  } finally {
    workers.forEach((w) => w.thread.close());
  }
});

Deno.test("shared-memory all-reduce, sharded: each chunk updated by its rank, declines reported, slices gathered", async () => {
  const [worldSize, length, rounds] = [3, 10_001, 2];
  const buffer = createSharedAllReduceBuffer({ worldSize, length });
  const workers = startSharedWorkers(worldSize, { buffer, length, rounds, update: true });
  const chunkOf = (r: number) => ({
    start: Math.floor(r * length / worldSize),
    end: Math.floor((r + 1) * length / worldSize),
  });
  try {
    const results = await Promise.all(workers.map((w) => w.received));
    for (let round = 0; round < rounds; round++) {
      const expected = weightedAverage(
        Array.from({ length: worldSize }, (_, rank) => contribution(rank, round, length)),
      );
      const gathered = new Float32Array(length);
      for (let r = 0; r < worldSize; r++) {
        const { start, end } = chunkOf(r);
        gathered.fill(r + round, start, end);
        if (round === 1 && r === 1) continue; // declined: keeps the average
        for (let i = start; i < end; i++) expected[i] = expected[i] * 2 + r;
      }
      results.forEach((messages, rank) => {
        const reply = messages[round];
        assert.equal(reply.error, undefined);
        assert.deepEqual(reply.result, expected);
        assert.deepEqual(reply.declined, round === 1 ? [chunkOf(1)] : []);
        assert.deepEqual(reply.gathered, rank === 0 ? gathered : undefined);
      });
    }
  } finally {
    workers.forEach((w) => w.thread.close());
  }
});

Deno.test("shared-memory all-reduce: 2 replicas of 2 parts each give the bits of 4 replicas", async () => {
  const [worldSize, parts, length, rounds] = [2, 2, 10_007, 3];
  const buffer = createSharedAllReduceBuffer({ worldSize, length, parts });
  const workers = startSharedWorkers(worldSize, { buffer, length, rounds, parts });
  try {
    const results = await Promise.all(workers.map((w) => w.received));
    for (let round = 0; round < rounds; round++) {
      // Weights 16 + rank + round: not powers of two, so the order of the terms shows.
      const expected = weightedAverage(
        Array.from({ length: 4 }, (_, rank) => contribution(rank, round, length)),
      );
      for (const messages of results) {
        assert.equal(messages[round].error, undefined);
        assert.deepEqual(messages[round].result, expected);
      }
    }
  } finally {
    workers.forEach((w) => w.thread.close());
  }
});

Deno.test("star all-reduce and one shared-memory replica: parts give the bits of as many replicas", async () => {
  const length = 5_003;
  const inputs = Array.from({ length: 3 }, (_, rank) => contribution(rank, 2, length));
  const expected = weightedAverage(inputs);
  const backToBack = (from: number, to: number) => {
    const data = new Float32Array((to - from) * length);
    inputs.slice(from, to).forEach((input, j) => data.set(input.data, j * length));
    return { data, weight: inputs.slice(from, to).map((input) => input.weight) };
  };
  // One replica, three parts (one of them weighing 0), without any peer.
  const alone = new SharedAllReduce(
    createSharedAllReduceBuffer({ worldSize: 1, length, parts: 3 }),
    { rank: 0, worldSize: 1, length, parts: 3 },
  );
  const whole = backToBack(0, 3);
  assert.deepEqual(await alone.average(whole.data, whole.weight), expected);
  await assert.rejects(alone.average(whole.data, [1, 2]), /expected 2 × 5003 elements/);
  // Star: replica 0 with parts 0 and 1, replica 1 with part 2.
  const [hub0, replica0] = mailboxPair();
  const [hub1, replica1] = mailboxPair();
  const hub = new StarAllReduceHub([hub0, hub1]);
  try {
    const first = backToBack(0, 2);
    const results = await Promise.all([
      new StarAllReduce(replica0).average(first.data, first.weight),
      new StarAllReduce(replica1).average(inputs[2].data.slice(), inputs[2].weight),
    ]);
    for (const result of results) assert.deepEqual(result, expected);
    assert.equal(hub.rounds, 1);
  } finally {
    [hub0, replica0, hub1, replica1].forEach((m) => m.close());
  }
});

Deno.test("shared-memory all-reduce: aborting wakes the replicas waiting for a dead peer", async () => {
  const worldSize = 3;
  const length = 1000;
  const buffer = createSharedAllReduceBuffer({ worldSize, length });
  const workers = startSharedWorkers(worldSize, { buffer, length, rounds: 1, stall: 2 });
  try {
    // Until ranks 0 and 1 have entered the all-reduce (and wait there for rank 2).
    while (sharedAllReduceRounds(buffer, { worldSize }).slice(0, 2).some((n) => n < 1)) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    abortSharedAllReduce(buffer);
    for (const { received } of workers.slice(0, 2)) {
      const [message] = await received;
      assert.match(message.error ?? "", /aborted: another replica failed/);
    }
  } finally {
    workers.forEach((w) => w.thread.close());
  }
});

Deno.test("shared-memory all-reduce rejects a buffer of the wrong shape", () => {
  const buffer = createSharedAllReduceBuffer({ worldSize: 2, length: 10 });
  assert.throws(
    () => new SharedAllReduce(buffer, { rank: 0, worldSize: 2, length: 11 }),
    /does not fit/,
  );
  assert.throws(() => new SharedAllReduce(buffer, { rank: 2, worldSize: 2, length: 10 }), /rank/);
});

Deno.test("the SIMD sum over shared WebAssembly memory gives weightedAverage's bits on every kind of float32", () => {
  const length = 1_001;
  const memory = new WebAssembly.Memory({ initial: 2, maximum: 2, shared: true });
  const buffer = memory.buffer as SharedArrayBuffer;
  const vectors = Array.from({ length: 7 }, (_, k) => {
    const view = new Float32Array(buffer, 4096 + 4 * k * length, length);
    view.set(awkwardVector(length, 40 + k));
    return view;
  });
  const out = new Float32Array(buffer, 4096 + 4 * 7 * length, length);
  const sum = SimdSum.over(memory, { address: 0, terms: 7 });
  assert.ok(sum, "WebAssembly SIMD over shared memory is available");
  for (let count = 1; count <= 7; count++) {
    // Weights of 0 (skipped), and uneven ones whose shares are not powers of two.
    const contributions = vectors.slice(0, count).map((data, k) => ({
      data,
      weight: k === 1 ? 0 : 3 + k,
    }));
    if (contributions.every((c) => c.weight === 0)) continue;
    for (const [start, end] of [[0, length], [3, 998], [5, 6], [0, 3]]) {
      const expected = weightedAverage(contributions, { start, end });
      out.fill(0);
      sum.average(averagedTerms(contributions), { out, start, end });
      assertSameBits(
        out.subarray(start, end),
        expected.subarray(start, end),
        `${count} vectors, [${start}, ${end})`,
      );
    }
  }
});

Deno.test("bfloat16 rounding, packing and unpacking in SIMD give the scalar loops' bits on every kind of float32", () => {
  const memory = new WebAssembly.Memory({ initial: 2, maximum: 2, shared: true });
  const buffer = memory.buffer as SharedArrayBuffer;
  const bf16 = Bf16Simd.over(memory);
  assert.ok(bf16, "WebAssembly SIMD over shared memory is available");
  for (const length of [1, 3, 4, 7, 8, 9, 16, 1_001]) {
    const values = awkwardVector(length, 70 + length);
    const bits = new Uint32Array(values.buffer);
    // Ties both ways (low half 0x8000 after an even and an odd high half), and NaNs with payloads.
    for (let i = 0; i < length; i += 5) bits[i] = (bits[i] & 0xffff0000) | 0x8000;
    for (let i = 2; i < length; i += 11) bits[i] = 0x7f800000 | (i * 0x9e37) & 0x7fffff | 1;
    // At awkward offsets of the memory: 4-byte but not 16-byte aligned.
    const at = new Float32Array(buffer, 4 + 4 * 3, length);
    at.set(values);
    const expected = values.slice();
    roundToBf16(expected);
    bf16.round(at);
    assertSameBits(at, expected, `round, length ${length}`);
    at.set(values);
    const packed = new Uint16Array(buffer, 40_000 + 2, length);
    const reference = new Uint16Array(length);
    packBf16(values, 0, reference);
    bf16.pack(at, packed);
    assert.deepEqual([...packed], [...reference], `pack, length ${length}`);
    const back = new Float32Array(buffer, 80_000 + 4, length);
    bf16.unpack(packed, back);
    assertSameBits(back, expected, `unpack, length ${length}`);
  }
});

for (const kind of ["SharedArrayBuffer", "WebAssembly.Memory"] as const) {
  Deno.test(`shared-memory all-reduce over a ${kind}: 3 workers × 2 parts give weightedAverage's bits`, async () => {
    const [worldSize, parts, length, rounds] = [3, 2, 10_007, 2];
    const shape = { worldSize, length, parts };
    const buffer = kind === "SharedArrayBuffer"
      ? createSharedAllReduceBuffer(shape)
      : createSharedAllReduceMemory(shape);
    assert.equal(buffer instanceof WebAssembly.Memory, kind === "WebAssembly.Memory");
    const workers = startSharedWorkers(worldSize, { buffer, length, rounds, parts });
    try {
      const results = await Promise.all(workers.map((w) => w.received));
      for (let round = 0; round < rounds; round++) {
        const expected = weightedAverage(
          Array.from({ length: 6 }, (_, rank) => contribution(rank, round, length)),
        );
        for (const messages of results) {
          assert.equal(messages[round].error, undefined);
          assert.deepEqual(messages[round].result, expected);
        }
      }
    } finally {
      workers.forEach((w) => w.thread.close());
    }
  });
}
