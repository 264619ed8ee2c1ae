/**
 * The TCP wire format and its authentication, over real loopback connections:
 * frames round-trip; oversize, truncated and malformed frames and a wrong
 * protocol version are refused with one clear error; a wrong token, a peer
 * that sends garbage before proving the token, and a silent peer are refused
 * without the healthy side crashing or reading more than the handshake allows.
 */

import assert from "node:assert/strict";
import { encode } from "npm:@msgpack/msgpack@3.1.3";
import {
  acceptAuthenticated,
  AuthError,
  connectAuthenticated,
  HANDSHAKE_MAX_FRAME_BYTES,
  importToken,
  writeAll,
} from "../lib/collective/tcp/auth.ts";
import {
  encodeFrame,
  float32Bytes,
  FrameError,
  type FrameHeader,
  FrameReader,
  PROTOCOL_VERSION,
} from "../lib/collective/tcp/frame.ts";
import { firstHost, type LaunchFlags, launchInfo } from "../lib/collective/tcp/launch_env.ts";
import { UsageError } from "../lib/errors.ts";
import { Link } from "../lib/collective/tcp/link.ts";
import { FakeClock } from "../lib/util/clock.ts";

/** A connected pair of loopback TCP connections. */
async function connectedPair(): Promise<{ server: Deno.Conn; client: Deno.Conn; close(): void }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [client, server] = await Promise.all([
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    listener.accept(),
  ]);
  listener.close();
  return {
    server,
    client,
    close: () => {
      for (const conn of [server, client]) {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
    },
  };
}

/** Frames read from raw `bytes` written by the other end, which then closes. */
async function readAfterWriting(bytes: Uint8Array, options: { maxFrameBytes?: number } = {}) {
  const pair = await connectedPair();
  try {
    await writeAll(pair.client, bytes);
    pair.client.close();
    const reader = new FrameReader(pair.server, { peer: "peer 1", ...options });
    const frames = [];
    for (let frame = await reader.read(); frame; frame = await reader.read()) frames.push(frame);
    return frames;
  } finally {
    pair.close();
  }
}

Deno.test("frames round-trip over TCP: header fields and a float32 payload, bit for bit", async () => {
  const gradient = Float32Array.from({ length: 100_003 }, (_, i) => Math.sin(i) * 1e-3);
  const bytes = new Uint8Array([
    ...encodeFrame({ type: "chunk", round: 7, index: 2 }, float32Bytes(gradient)),
    ...encodeFrame({ type: "done" }),
  ]);
  const frames = await readAfterWriting(bytes);
  assert.equal(frames.length, 2);
  assert.deepEqual(frames[0].header, { type: "chunk", round: 7, index: 2 });
  const back = new Float32Array(frames[0].payload.slice().buffer);
  assert.deepEqual(back, gradient);
  assert.deepEqual(frames[1].header, { type: "done" });
  assert.equal(frames[1].payload.length, 0);
});

Deno.test("frames cut anywhere read whole; every payload starts 8-byte aligned", async () => {
  const sent: [FrameHeader, Uint8Array][] = [];
  for (const size of [0, 3, 4096, 70_001, 300_003]) {
    for (let pad = 0; pad < 8; pad++) {
      const payload = Uint8Array.from({ length: size }, (_, i) => (i * 7 + pad) & 0xff);
      sent.push([{ type: "chunk", seq: 123_456, tag: "x".repeat(pad) }, payload]);
    }
  }
  const bytes = new Uint8Array(
    sent.flatMap(([header, payload]) => [...encodeFrame(header, payload)]),
  );
  // Cut into pieces of 1 to 5,000 bytes (a fixed sequence), as a socket may deliver them.
  const pieces: Uint8Array[] = [];
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const size = i % 3 === 0 ? 1 + (i % 7) : 1 + ((i * 7919) % 5000);
    pieces.push(bytes.slice(at, at + size));
    at += size;
  }
  const reader = new FrameReader(ReadableStream.from(pieces), { peer: "peer" });
  for (const [header, payload] of sent) {
    const frame = await reader.read();
    assert.deepEqual(frame?.header, header);
    assert.deepEqual(frame.payload, payload);
    assert.equal(frame.payload.byteOffset % 8, 0, `${frame.payload.byteOffset}`);
  }
  assert.equal(await reader.read(), undefined);
});

Deno.test("a released frame's memory takes the next frame of its size; one not released keeps its payload", async () => {
  const pair = await connectedPair();
  try {
    const values = (seed: number) => Float32Array.from({ length: 65_536 }, (_, i) => i + seed);
    for (let seed = 0; seed < 3; seed++) {
      await writeAll(pair.client, encodeFrame({ type: "scatter" }, float32Bytes(values(seed))));
    }
    const reader = new FrameReader(pair.server, { peer: "peer" });
    const first = (await reader.read())!;
    const kept = new Float32Array(first.payload.buffer, first.payload.byteOffset, 65_536);
    const second = (await reader.read())!;
    assert.notEqual(second.payload.buffer, first.payload.buffer);
    second.release!();
    const third = (await reader.read())!;
    assert.equal(third.payload.buffer, second.payload.buffer); // reused, not fresh
    assert.deepEqual(new Float32Array(third.payload.slice().buffer), values(2));
    assert.deepEqual(kept, values(0));
  } finally {
    pair.close();
  }
});

Deno.test("bad frames: one clear error each, naming the peer", async (t) => {
  const good = encodeFrame({ type: "chunk" }, new Uint8Array(40));
  const withLength = (length: number) => {
    const bytes = good.slice();
    new DataView(bytes.buffer).setUint32(0, length);
    return bytes;
  };
  const header = (fields: unknown) => {
    const head = encode(fields);
    const bytes = new Uint8Array(6 + head.length);
    new DataView(bytes.buffer).setUint32(0, 2 + head.length);
    new DataView(bytes.buffer).setUint16(4, head.length);
    bytes.set(head, 6);
    return bytes;
  };
  const cases: [string, Uint8Array, RegExp][] = [
    [
      "oversize",
      withLength(2 ** 31),
      /^peer 1: frame of 2147483648 bytes, outside 2\.\.1024: not this protocol, or corrupt$/,
    ],
    [
      "truncated in the body",
      good.subarray(0, good.length - 5),
      /^peer 1: connection closed inside a frame \(truncated\)$/,
    ],
    [
      "truncated in the length",
      good.subarray(0, 3),
      /^peer 1: connection closed inside a frame \(truncated\)$/,
    ],
    ["header not MessagePack", header(undefined).fill(0xc1, 6), /^peer 1: malformed frame header/],
    ["header not a map", header([1, 2]), /^peer 1: malformed frame header \(not a map\)$/],
    [
      "another protocol version",
      header({ v: PROTOCOL_VERSION + 1, type: "x" }),
      /^peer 1: protocol version 2, but this process speaks 1$/,
    ],
    ["no type", header({ v: PROTOCOL_VERSION }), /^peer 1: malformed frame header \(no type\)$/],
  ];
  for (const [name, bytes, pattern] of cases) {
    await t.step(name, async () => {
      await assert.rejects(
        readAfterWriting(bytes, { maxFrameBytes: 1024 }),
        (e: unknown) => e instanceof FrameError && pattern.test(e.message),
      );
    });
  }
});

const TOKEN = "a shared token, long enough";

Deno.test("both sides prove the token before anything else; the connection then carries frames", async () => {
  const key = await importToken({ token: TOKEN });
  const pair = await connectedPair();
  try {
    const [serverFrames, clientFrames] = await Promise.all([
      acceptAuthenticated(pair.server, { key, peer: "client" }),
      connectAuthenticated(pair.client, { key, peer: "server" }),
    ]);
    // After the handshake, large frames are allowed again.
    const payload = new Uint8Array(HANDSHAKE_MAX_FRAME_BYTES * 4).fill(7);
    await writeAll(pair.client, encodeFrame({ type: "chunk" }, payload));
    await writeAll(pair.server, encodeFrame({ type: "ack" }));
    const [received, ack] = await Promise.all([serverFrames.read(), clientFrames.read()]);
    assert.deepEqual(received?.payload, payload);
    assert.equal(ack?.header.type, "ack");
  } finally {
    pair.close();
  }
});

Deno.test("a wrong token is refused on both sides with one clear line", async () => {
  const right = await importToken({ token: TOKEN });
  const wrong = await importToken({ token: "not the shared token at all" });
  const pair = await connectedPair();
  try {
    const [server, client] = await Promise.allSettled([
      acceptAuthenticated(pair.server, { key: right, peer: "127.0.0.1:5" }),
      connectAuthenticated(pair.client, { key: wrong, peer: "rank 0" }),
    ]);
    assert.equal(server.status, "rejected");
    assert.ok(server.reason instanceof AuthError);
    assert.equal(server.reason.message, "127.0.0.1:5: wrong token; connection refused");
    assert.equal(client.status, "rejected");
    assert.equal(client.reason.message, "rank 0 refused the connection: wrong token");
  } finally {
    pair.close();
  }
});

Deno.test("before the token is proved: no large frame is read, garbage and silence are refused", async (t) => {
  const key = await importToken({ token: TOKEN });
  await t.step("a client that sends a huge frame instead of answering", async () => {
    const pair = await connectedPair();
    try {
      const accepted = acceptAuthenticated(pair.server, { key, peer: "intruder" });
      await writeAll(pair.client, encodeFrame({ type: "chunk" }, new Uint8Array(1 << 20)));
      await assert.rejects(
        accepted,
        /^AuthError: intruder: frame of 1048593 bytes, outside 2\.\.1024: not this protocol, or corrupt \(during the handshake\)$/,
      );
    } finally {
      pair.close();
    }
  });
  await t.step("a client that sends bytes that are not frames", async () => {
    const pair = await connectedPair();
    try {
      const accepted = acceptAuthenticated(pair.server, { key, peer: "intruder" });
      await writeAll(pair.client, new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"));
      await assert.rejects(accepted, (e: unknown) => e instanceof AuthError);
    } finally {
      pair.close();
    }
  });
  await t.step("a client that never answers", async () => {
    const pair = await connectedPair();
    try {
      await assert.rejects(
        acceptAuthenticated(pair.server, { key, peer: "silent", timeoutMs: 300 }),
        /^AuthError: silent: no handshake within 0\.3 s$/,
      );
    } finally {
      pair.close();
    }
  });
});

Deno.test("the token comes from a value or a file, and must be long enough", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/token`, `${TOKEN}\n`);
    const fromFile = await importToken({ file: `${dir}/token` });
    const fromValue = await importToken({ token: TOKEN });
    const data = new TextEncoder().encode("x");
    const a = new Uint8Array(await crypto.subtle.sign("HMAC", fromFile, data));
    const b = new Uint8Array(await crypto.subtle.sign("HMAC", fromValue, data));
    assert.deepEqual(a, b, "the file's trailing newline is not part of the token");
    await assert.rejects(importToken({}), /at least 16 characters is needed/);
    await assert.rejects(
      importToken({ file: `${dir}/missing` }),
      /^AuthError: token file .*missing: /,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a process's place in the job, as torchrun, Slurm, Open MPI or the flags say", () => {
  const torchrun = {
    RANK: "1",
    WORLD_SIZE: "2",
    LOCAL_RANK: "0",
    LOCAL_WORLD_SIZE: "1",
    MASTER_ADDR: "10.0.0.1",
    MASTER_PORT: "29501",
  };
  assert.deepEqual(launchInfo({}, torchrun), {
    rank: 1,
    worldSize: 2,
    localRank: 0,
    localWorldSize: 1,
    masterAddr: "10.0.0.1",
    masterPort: 29501,
    source: "torchrun",
  });
  const mpi = { OMPI_COMM_WORLD_RANK: "0", OMPI_COMM_WORLD_SIZE: "3", MASTER_ADDR: "head" };
  assert.equal(launchInfo({}, mpi)?.source, "openmpi");
  assert.equal(launchInfo({}, mpi)?.masterPort, 29500);
  // Flags win over the environment.
  const flags = { nnodes: "2", nodeRank: "0", masterAddr: "127.0.0.1", masterPort: "4000" };
  assert.deepEqual(launchInfo(flags, torchrun), {
    rank: 0,
    worldSize: 2,
    localRank: 0,
    localWorldSize: 1,
    masterAddr: "127.0.0.1",
    masterPort: 4000,
    source: "flags",
  });
  assert.equal(firstHost("n[001-004]"), "n001");
  for (
    const [given, env, message] of [
      [
        { nnodes: "2", nodeRank: "2" },
        {},
        /^--node-rank must be a whole number in 0\.\.1, got "2"$/,
      ],
      [{ nnodes: "2", nodeRank: "1" }, {}, /^--nnodes needs --master-addr/],
      [{}, { ...torchrun, RANK: "-1" }, /^RANK must be a whole number in 0\.\.1, got "-1"$/],
      [{}, { ...torchrun, MASTER_ADDR: undefined }, /^MASTER_ADDR is not set$/],
      [
        {},
        { ...torchrun, MASTER_PORT: "70000" },
        /^MASTER_PORT must be a whole number in 0\.\.65535/,
      ],
      [{}, { SLURM_PROCID: "0", SLURM_NTASKS: "2" }, /^SLURM_JOB_NODELIST is not set$/],
    ] as const
  ) {
    assert.throws(
      () => launchInfo(given as LaunchFlags, env as Record<string, string>),
      (e: unknown) => e instanceof UsageError && message.test(e.message),
    );
  }
});

Deno.test("a link presumes a silent peer dead after the silence limit, not before; each frame heard resets it (fake clock)", async () => {
  const pair = await connectedPair();
  const clock = new FakeClock();
  const failures: string[] = [];
  const link = new Link(pair.server, new FrameReader(pair.server, { peer: "peer" }), {
    peer: "rank 1",
    silenceMs: 60_000,
    clock,
    onFailure: (error) => failures.push(error.message),
  });
  clock.tick(48_000);
  // A frame from the peer: heard, so the 60 s start again.
  await writeAll(pair.client, encodeFrame({ type: "heartbeat" }));
  await writeAll(pair.client, encodeFrame({ type: "ping" }));
  await link.next("ping"); // read after the heartbeat, in order
  clock.tick(59_000); // 59 s after it: still within the limit
  assert.deepEqual(failures, []);
  clock.tick(13_000); // the next check falls past 60 s of silence
  assert.equal(failures.length, 1);
  assert.match(failures[0], /^rank 1 sent nothing for (6[1-9]|7\d) s: presumed dead$/);
  assert.notEqual(link.error, null);
  pair.close();
});
