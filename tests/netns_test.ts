/**
 * Two "hosts" as two network namespaces joined by a virtual cable: each
 * process of the group sees only its own address, and the traffic goes over
 * that cable, not loopback. When one host drops off the network (its link goes
 * down: nothing is closed, nothing is sent), the other names it after the
 * silence limit. Needs root (to create namespaces); ignored, and reported so,
 * where `ip netns` is not allowed.
 */

import assert from "node:assert/strict";
import { ROOT, scriptEnv } from "./helpers.ts";
import { ignoredWithout } from "./skips.ts";

const NS = ["ddp-test-a", "ddp-test-b"] as const;
const ADDRESSES = ["10.213.0.1", "10.213.0.2"] as const;

async function ip(...args: string[]): Promise<{ ok: boolean; stderr: string }> {
  try {
    const { success, stderr } = await new Deno.Command("ip", { args, stderr: "piped" }).output();
    return { ok: success, stderr: new TextDecoder().decode(stderr) };
  } catch (error) {
    return { ok: false, stderr: (error as Error).message };
  }
}

async function createHosts(): Promise<void> {
  await removeHosts();
  for (const ns of NS) assert.ok((await ip("netns", "add", ns)).ok);
  const steps = [
    [
      "link",
      "add",
      "ddp-va",
      "netns",
      NS[0],
      "type",
      "veth",
      "peer",
      "name",
      "ddp-vb",
      "netns",
      NS[1],
    ],
    ["-n", NS[0], "addr", "add", `${ADDRESSES[0]}/24`, "dev", "ddp-va"],
    ["-n", NS[1], "addr", "add", `${ADDRESSES[1]}/24`, "dev", "ddp-vb"],
    ["-n", NS[0], "link", "set", "ddp-va", "up"],
    ["-n", NS[1], "link", "set", "ddp-vb", "up"],
    ["-n", NS[0], "link", "set", "lo", "up"],
    ["-n", NS[1], "link", "set", "lo", "up"],
  ];
  for (const step of steps) {
    const result = await ip(...step);
    assert.ok(result.ok, `ip ${step.join(" ")}: ${result.stderr}`);
  }
}

async function removeHosts(): Promise<void> {
  for (const ns of NS) await ip("netns", "del", ns);
}

/** Process `rank` of 2 inside namespace `NS[rank]`, rank 0 listening at its own address. */
function member(rank: number, port: number) {
  const child = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      NS[rank],
      Deno.execPath(),
      "run",
      "-A",
      `${ROOT}/tests/fixtures/pg_member.ts`,
      `--rank=${rank}`,
      "--size=2",
      `--addr=${ADDRESSES[0]}`,
      `--port=${port}`,
    ],
    clearEnv: true,
    env: { ...scriptEnv(), DDP_TOKEN: "two hosts, one shared token" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stdout = "";
  const reading = (async () => {
    for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) stdout += text;
  })();
  void child.stderr.cancel();
  return {
    child,
    output: () => stdout,
    async waitFor(pattern: RegExp): Promise<void> {
      for (let i = 0; i < 600 && !pattern.test(stdout); i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.match(stdout, pattern);
    },
    async finished(): Promise<{ code: number; stdout: string }> {
      const { code } = await child.status;
      await reading;
      return { code, stdout };
    },
  };
}

Deno.test({
  name:
    "two hosts in two network namespaces: the group forms over their own addresses; a host that drops off is named",
  ignore: await ignoredWithout("network-namespaces"),
  fn: async () => {
    await createHosts();
    const ranks = [member(0, 29571), member(1, 29571)];
    try {
      await Promise.all(ranks.map((r) => r.waitFor(/^joined$/m)));
      // Rank 1's ring connection comes from its own address, not loopback.
      const links = await new Deno.Command("ip", {
        args: ["netns", "exec", NS[0], "ss", "-tn", "state", "established"],
        stdout: "piped",
      }).output();
      const table = new TextDecoder().decode(links.stdout);
      const a = ADDRESSES[0].replaceAll(".", "\\.");
      const b = ADDRESSES[1].replaceAll(".", "\\.");
      assert.match(table, new RegExp(`${a}:\\d+\\s+${b}:\\d+`), table);
      assert.doesNotMatch(table, /127\.0\.0\.1/);
      // Host b drops off the network: its cable goes down, no connection is closed.
      assert.ok((await ip("-n", NS[1], "link", "set", "ddp-vb", "down")).ok);
      const zero = await ranks[0].finished();
      assert.equal(zero.code, 1);
      assert.match(
        zero.stdout,
        /^failed: rank 1 \(10\.213\.0\.2:\d+\) sent nothing for 1 s: presumed dead$/m,
      );
    } finally {
      for (const r of ranks) {
        try {
          r.child.kill("SIGKILL");
        } catch { /* exited */ }
        await r.child.status;
      }
      await removeHosts();
    }
  },
});
