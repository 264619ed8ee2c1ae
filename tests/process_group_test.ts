/**
 * The TCP process group on 127.0.0.1: its average equals `weightedAverage`
 * over every replica, bit for bit, on every rank and for any split of the
 * replicas into processes; broadcast and exchange; the rendezvous refuses a
 * wrong token, world size, configuration or a duplicate rank with one line and
 * completes with the right process; a peer that dies or goes silent is named.
 */

import assert from "node:assert/strict";
import { type Contribution, weightedAverage } from "../lib/collective/all_reduce.ts";
import { PeerError } from "../lib/collective/process_group.ts";
import { importToken } from "../lib/collective/tcp/auth.ts";
import {
  InterruptedRendezvous,
  type TcpGroupOptions,
  TcpProcessGroup,
} from "../lib/collective/tcp/tcp_process_group.ts";
import { sha256Hex } from "../lib/util/sha256.ts";
import { randomVector } from "./helpers.ts";

const TOKEN = "test token, long enough to be one";
const key = await importToken({ token: TOKEN });

/**
 * Rank 0 of a group on loopback, on a free port of its own choice (port 0),
 * and that port once it listens: nothing picks a port and hopes it stays free.
 */
function startRoot(
  size: number,
  options: Partial<TcpGroupOptions> = {},
): { root: Promise<TcpProcessGroup>; port: Promise<number> } {
  const port = Promise.withResolvers<number>();
  const root = TcpProcessGroup.connect({
    rank: 0,
    size,
    masterAddr: "127.0.0.1",
    key,
    ...options,
    masterPort: 0,
    onListening: port.resolve,
  });
  root.catch(port.reject); // a root that cannot listen never reports a port
  return { root, port: port.promise };
}

/** `size` groups on loopback in this process, rank 0 on a port of its choice. */
function joinAll(size: number, options: Partial<TcpGroupOptions> = {}): Promise<TcpProcessGroup>[] {
  const { root, port } = startRoot(size, options);
  return [
    root,
    ...Array.from(
      { length: size - 1 },
      (_, i) =>
        port.then((masterPort) =>
          TcpProcessGroup.connect({
            rank: i + 1,
            size,
            masterAddr: "127.0.0.1",
            masterPort,
            key,
            ...options,
          })
        ),
    ),
  ];
}

async function checksum(values: Float32Array): Promise<string> {
  return await sha256Hex(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
}

Deno.test("the average (chain or direct reduce-scatter) is weightedAverage over every replica, whatever the split into processes", async () => {
  // 6 replicas with uneven weights (one zero), a length of several chunks plus a remainder.
  const length = 3 * 65536 + 17;
  const replicas: Contribution[] = [3, 0, 5, 1, 2, 4].map((weight, r) => ({
    data: randomVector(length, r + 1),
    weight,
  }));
  const expected = await checksum(weightedAverage(replicas));
  // Up to 2 replicas in every process: the direct reduce-scatter; more: the chain.
  const splits = [[6], [2, 4], [1, 1, 4], [3, 3], [1, 2, 1, 2], [2, 2, 2], [1, 1, 1, 1, 1, 1]];
  for (const split of splits) {
    const groups = await Promise.all(joinAll(split.length));
    let first = 0;
    const results = await Promise.all(groups.map((group, rank) => {
      const mine = replicas.slice(first, first + split[rank]);
      first += split[rank];
      return group.average(mine);
    }));
    const sums = await Promise.all(results.map(checksum));
    assert.deepEqual(sums, new Array(split.length).fill(expected), `split ${split}`);
    await Promise.all(groups.map((group) => group.close()));
  }
});

Deno.test("broadcast, barrier and exchange reach every rank, in order, many times over", async () => {
  const groups = await Promise.all(joinAll(3));
  const payload = randomVector(100_000, 9);
  for (let round = 0; round < 3; round++) {
    // Rank 0 reuses its buffer as soon as its broadcast resolves: the others still get the bytes.
    const sent = payload.slice();
    const got = await Promise.all(
      groups.map((g) =>
        g.rank === 0
          ? g.broadcast(new Uint8Array(sent.buffer)).then((bytes) => {
            const copy = bytes.slice();
            sent.fill(0);
            return copy;
          })
          : g.broadcast(undefined)
      ),
    );
    for (const bytes of got) assert.equal(bytes.length, payload.byteLength);
    const bytes = got[2];
    assert.equal(
      await checksum(new Float32Array(bytes.slice().buffer)),
      await checksum(payload),
    );
    await Promise.all(groups.map((g) => g.barrier()));
    const all = await Promise.all(groups.map((g) => g.exchange({ rank: g.rank, round })));
    for (const values of all) {
      assert.deepEqual(values, [0, 1, 2].map((rank) => ({ rank, round })));
    }
  }
  await Promise.all(groups.map((group) => group.close()));
});

Deno.test("the rendezvous refuses a wrong token, world size, configuration and a duplicate rank, then completes", async () => {
  const notices: string[] = [];
  const started = startRoot(2, { digest: "config A", onNotice: (line) => notices.push(line) });
  const root = started.root;
  const masterPort = await started.port;
  const base = { masterAddr: "127.0.0.1", masterPort, key, digest: "config A" };
  const wrongKey = await importToken({ token: "another token, also long" });
  await assert.rejects(
    TcpProcessGroup.connect({ ...base, rank: 1, size: 2, key: wrongKey }),
    /wrong token/,
  );
  await assert.rejects(
    TcpProcessGroup.connect({ ...base, rank: 1, size: 3 }),
    /rank 0 refused this process: it says the job has 3 processes, rank 0 says 2/,
  );
  await assert.rejects(
    TcpProcessGroup.connect({ ...base, rank: 1, size: 2, digest: "config B" }),
    /another configuration than rank 0/,
  );
  const member = await TcpProcessGroup.connect({ ...base, rank: 1, size: 2 });
  const group = await root;
  assert.equal(notices.length, 3);
  assert.match(notices[0], /^refused a connection from 127\.0\.0\.1:\d+: .*wrong token/);
  // Both work.
  const [a, b] = await Promise.all([group.exchange("a"), member.exchange("b")]);
  assert.deepEqual([a, b], [["a", "b"], ["a", "b"]]);
  await Promise.all([group.close(), member.close()]);

  // Two processes given rank 1: the second is refused (it tries again, as its first process's
  // place might have been freeing), and the group completes with the first.
  const notes: string[] = [];
  const refusal = Promise.withResolvers<void>();
  const { root: root3, port } = startRoot(3, {
    onNotice: (line) => {
      notes.push(line);
      refusal.resolve();
    },
  });
  const masterPort3 = await port;
  const join3 = (rank: number, rendezvousTimeoutMs?: number) =>
    TcpProcessGroup.connect({
      rank,
      size: 3,
      masterAddr: "127.0.0.1",
      masterPort: masterPort3,
      key,
      rendezvousTimeoutMs,
    });
  const twins = [join3(1, 3000), join3(1, 3000)];
  await refusal.promise; // one of them is in; the other was turned away
  const settled = await Promise.allSettled([root3, join3(2), ...twins]);
  const refused = settled.filter((s) => s.status === "rejected");
  assert.equal(refused.length, 1);
  assert.match(
    String((refused[0] as PromiseRejectedResult).reason.message),
    /rank 1 has already joined \(two processes were given the same rank\?\)/,
  );
  assert.ok(notes.every((line) => /rank 1 has already joined/.test(line)), notes.join("\n"));
  const ok = settled.flatMap((s) => s.status === "fulfilled" ? [s.value] : []);
  assert.equal(ok.length, 3);
  await Promise.all(ok.map((g) => g.close()));
});

Deno.test("rank 0 names the ranks that never joined", async () => {
  const { root, port } = startRoot(3, { rendezvousTimeoutMs: 800 });
  const one = TcpProcessGroup.connect({
    rank: 1,
    size: 3,
    masterAddr: "127.0.0.1",
    masterPort: await port,
    key,
    rendezvousTimeoutMs: 800,
  }); // rank 2 is never started
  await assert.rejects(root, new PeerError("rank(s) 2 did not join in time"));
  await assert.rejects(one, PeerError);
});

Deno.test("a process that leaves early is named by the others", async () => {
  const groups = await Promise.all(joinAll(3));
  await groups[1].close(); // leaves early (a killed process: below)
  const data = new Float32Array(10);
  const results = await Promise.allSettled([
    groups[0].average([{ data, weight: 1 }]),
    groups[2].average([{ data, weight: 1 }]),
  ]);
  for (const result of results) {
    assert.equal(result.status, "rejected");
    assert.match((result as PromiseRejectedResult).reason.message, /rank 1/);
  }
  await Promise.all([groups[0].close(), groups[2].close()]);
});

/** Rank 1 of 2 as a separate process, started after this process's rank 0 began to listen. */
async function withMemberProcess(
  use: (member: Deno.ChildProcess, group: TcpProcessGroup) => Promise<void>,
): Promise<void> {
  const started = startRoot(2, { silenceMs: 1000 });
  const root = started.root;
  const port = await started.port;
  const member = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./fixtures/pg_member.ts", import.meta.url).pathname,
      "--rank=1",
      "--size=2",
      `--port=${port}`,
    ],
    env: { DDP_TOKEN: TOKEN },
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await use(member, await root);
  } finally {
    try {
      member.kill("SIGKILL");
    } catch { /* exited */ }
    await member.status;
  }
}

Deno.test("a killed process is named at once; a silent one after the silence limit", async () => {
  await withMemberProcess(async (member, group) => {
    const data = new Float32Array(1000).fill(1);
    assert.deepEqual([...await group.average([{ data, weight: 1 }])].slice(0, 2), [1, 1]);
    member.kill("SIGKILL");
    await assert.rejects(
      (async () => {
        for (;;) await group.average([{ data, weight: 1 }]);
      })(),
      /rank 1 \(127\.0\.0\.1:\d+\) closed its connection/,
    );
    await group.close();
  });
  await withMemberProcess(async (member, group) => {
    const data = new Float32Array(1000).fill(1);
    await group.average([{ data, weight: 1 }]);
    member.kill("SIGSTOP"); // alive, connections open, says nothing
    await assert.rejects(
      (async () => {
        for (;;) await group.average([{ data, weight: 1 }]);
      })(),
      /rank 1 \(127\.0\.0\.1:\d+\) sent nothing for 1 s: presumed dead/,
    );
    await group.close();
  });
});

Deno.test("rank 0 names a master address it cannot listen at (one that does not resolve: at its deadline)", async () => {
  for (const masterAddr of ["no-such-host.invalid", "192.0.2.1"]) { // 192.0.2.1: TEST-NET-1, not ours
    await assert.rejects(
      TcpProcessGroup.connect({
        rank: 0,
        size: 2,
        masterAddr,
        masterPort: 29500, // never bound: the address does not resolve, or is not this host's
        key,
        rendezvousTimeoutMs: 500,
      }),
      (error: Error) =>
        error instanceof PeerError &&
        error.message.startsWith(`rank 0 cannot listen at ${masterAddr}:`),
    );
  }
});

Deno.test("idle connections to the rendezvous port delay no one: each handshake runs on its own deadline", async () => {
  const handshakeTimeoutMs = 5000;
  const { root, port } = startRoot(2, { handshakeTimeoutMs });
  const masterPort = await port;
  // Two connections that never send a byte, as a port scanner or an attacker without the token.
  const idle = await Promise.all(
    [1, 2].map(() => Deno.connect({ hostname: "127.0.0.1", port: masterPort })),
  );
  const started = performance.now();
  const member = await TcpProcessGroup.connect({
    rank: 1,
    size: 2,
    masterAddr: "127.0.0.1",
    masterPort,
    key,
    handshakeTimeoutMs,
  });
  const group = await root;
  const waited = performance.now() - started;
  // Before, rank 0 handshook one connection at a time: the real rank waited out both idle ones.
  assert.ok(waited < handshakeTimeoutMs, `the group formed after ${waited.toFixed(0)} ms`);
  idle.forEach((conn) => conn.close());
  await Promise.all([group.close(), member.close()]);
});

Deno.test("a rank stopped during the rendezvous frees its place; started again, it joins", async () => {
  const notices: string[] = [];
  const left = Promise.withResolvers<void>();
  const { root, port } = startRoot(3, {
    onNotice: (line) => {
      notices.push(line);
      if (/left before the group was complete/.test(line)) left.resolve();
    },
  });
  const masterPort = await port;
  const join = (rank: number, options: Partial<TcpGroupOptions> = {}) =>
    TcpProcessGroup.connect({
      rank,
      size: 3,
      masterAddr: "127.0.0.1",
      masterPort,
      key,
      ...options,
    });
  // Rank 1 joins, then is stopped (Ctrl-C) while it waits for rank 2.
  const stop = new AbortController();
  const first = join(1, {
    signal: stop.signal,
    onNotice: (line) => /^joined at rank 0/.test(line) && stop.abort(),
  });
  await assert.rejects(first, InterruptedRendezvous);
  await left.promise; // rank 0 saw it go
  const groups = await Promise.all([root, join(1), join(2)]);
  assert.match(
    notices.join("\n"),
    /^rank 1 left before the group was complete \(.*\); waiting for it$/m,
  );
  const [a] = await Promise.all(groups.map((g) => g.exchange(g.rank)));
  assert.deepEqual(a, [0, 1, 2]);
  await Promise.all(groups.map((g) => g.close()));
});

Deno.test("rank 0 stopped during the rendezvous: the ranks that joined stop at once, told why", async () => {
  const stop = new AbortController();
  const { root, port } = startRoot(3, { signal: stop.signal });
  const masterPort = await port;
  const started = performance.now();
  const member = TcpProcessGroup.connect({
    rank: 1,
    size: 3,
    masterAddr: "127.0.0.1",
    masterPort,
    key, // the default rendezvous deadline: 600 s
    onNotice: (line) => /^joined at rank 0/.test(line) && stop.abort(),
  });
  await assert.rejects(root, InterruptedRendezvous);
  await assert.rejects(
    member,
    (e: Error) => e instanceof PeerError && /stopped: interrupted while waiting/.test(e.message),
  );
  const waited = performance.now() - started;
  // Bound: its deadline is 600 s; the abort frame reaches it in one round trip.
  assert.ok(waited < 10_000, `rank 1 stopped after ${waited.toFixed(0)} ms`);
});
