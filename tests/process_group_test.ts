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
import { type TcpGroupOptions, TcpProcessGroup } from "../lib/collective/tcp/tcp_process_group.ts";
import { sha256Hex } from "../lib/util/sha256.ts";
import { freePort } from "./helpers.ts";

const TOKEN = "test token, long enough to be one";
const key = await importToken({ token: TOKEN });

/** `size` groups on loopback in this process; ranks in `options.ranks` only, if given. */
function joinAll(
  size: number,
  options: Partial<TcpGroupOptions> & { masterPort?: number } = {},
): Promise<TcpProcessGroup>[] {
  const masterPort = options.masterPort ?? freePort();
  return Array.from({ length: size }, (_, rank) =>
    TcpProcessGroup.connect({
      rank,
      size,
      masterAddr: "127.0.0.1",
      masterPort,
      key,
      ...options,
    }));
}

function randomVector(length: number, seed: number): Float32Array {
  const out = new Float32Array(length);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < length; i++) {
    x = (x * 1664525 + 1013904223) >>> 0;
    out[i] = ((x / 2 ** 32) - 0.5) * 2 ** ((x % 40) - 20);
  }
  return out;
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
    const got = await Promise.all(
      groups.map((g) => g.broadcast(g.rank === 0 ? new Uint8Array(payload.buffer) : undefined)),
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
  const masterPort = freePort();
  const notices: string[] = [];
  const root = TcpProcessGroup.connect({
    rank: 0,
    size: 2,
    masterAddr: "127.0.0.1",
    masterPort,
    key,
    digest: "config A",
    onNotice: (line) => notices.push(line),
  });
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

  // Two processes given rank 1: the second is refused, the first one's group completes.
  const port = freePort();
  const notes: string[] = [];
  const groups = joinAll(3, { masterPort: port, onNotice: (line) => notes.push(line) });
  const twin = TcpProcessGroup.connect({
    rank: 1,
    size: 3,
    masterAddr: "127.0.0.1",
    masterPort: port,
    key,
  });
  const settled = await Promise.allSettled([...groups, twin]);
  const refused = settled.filter((s) => s.status === "rejected");
  assert.equal(refused.length, 1);
  assert.match(
    String((refused[0] as PromiseRejectedResult).reason.message),
    /rank 0 refused this process: rank 1 has already joined \(two processes were given the same rank\)/,
  );
  assert.equal(notes.length, 1);
  const ok = settled.flatMap((s) => s.status === "fulfilled" ? [s.value] : []);
  assert.equal(ok.length, 3);
  await Promise.all(ok.map((g) => g.close()));
});

Deno.test("rank 0 names the ranks that never joined", async () => {
  const masterPort = freePort();
  const join = (rank: number) =>
    TcpProcessGroup.connect({
      rank,
      size: 3,
      masterAddr: "127.0.0.1",
      masterPort,
      key,
      rendezvousTimeoutMs: 800,
    });
  const [root, one] = [join(0), join(1)]; // rank 2 is never started
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
  const port = freePort();
  const root = TcpProcessGroup.connect({
    rank: 0,
    size: 2,
    masterAddr: "127.0.0.1",
    masterPort: port,
    key,
    silenceMs: 1000,
  });
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
        masterPort: freePort(),
        key,
        rendezvousTimeoutMs: 500,
      }),
      (error: Error) =>
        error instanceof PeerError &&
        error.message.startsWith(`rank 0 cannot listen at ${masterAddr}:`),
    );
  }
});
