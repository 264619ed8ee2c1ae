/**
 * Elastic runs (`serve.elastic`): members join and leave while the run
 * trains, and the weights stay those of a fixed run with the same shards,
 * bit for bit — with this process's workers only, with Deno processes that
 * join (`--join`) and are killed, across a pause below `minMembers`, and with
 * members that misbehave (a wrong-size, non-finite or oversized result, a
 * stall), each dropped with a line naming it.
 */

import assert from "node:assert/strict";
import { decodeMessage, encodeMessage, WebSocketChannel } from "../lib/collective/ws_channel.ts";
import { admitted } from "../lib/collective/ws_admit.ts";
import { WorkerThread } from "../lib/collective/worker_thread.ts";
import type { Message } from "../lib/collective/channel.ts";
import { trainOptionsFromFlags } from "../lib/cli/train_flags.ts";
import { parseFlags } from "../lib/cli/cli.ts";
import { TRAIN_FLAGS } from "../lib/cli/train_flags.ts";
import { train } from "../lib/train/coordinator/train.ts";
import type { MemberEvent, MemberReadyMessage } from "../lib/train/shared/member_protocol.ts";
import type { TrainOptions } from "../lib/train/shared/options.ts";
import { UsageError } from "../lib/errors.ts";
import { imageLikeDataset, scriptArgs } from "./helpers.ts";
import { spawnGuarded } from "./process_helpers.ts";
import { withBrowserPage } from "./browser.ts";
import { ignoredWithout } from "./skips.ts";

const TOKEN = "the elastic test's token";

/** NiN, small: 16 steps an epoch of 4 shards. */
const RUN = {
  model: { name: "nin", inputSize: 67, width: 0.125 },
  data: { train: imageLikeDataset(1024, 1), test: imageLikeDataset(128, 2) },
  batchSize: 64,
  lr: 0.05,
  optimizer: { name: "sgd", momentum: 0.9 },
  seed: 3,
} as const satisfies TrainOptions;

/** The fixed run every elastic run must equal: 1 worker computing the 4 shards. */
let reference: Promise<{ checksum: string; weights: Float32Array }> | undefined;
function referenceRun(epochs: number) {
  assert.equal(epochs, 3, "one reference, for 3 epochs");
  reference ??= train({ ...RUN, epochs, distributed: { workers: 1, shards: 4 } });
  return reference;
}
async function referenceChecksum(epochs: number): Promise<string> {
  return (await referenceRun(epochs)).checksum;
}

/** An elastic run of {@linkcode RUN} served on a free port; `onUrl` gets its port. */
function elasticRun(options: {
  epochs: number;
  workers: number;
  minMembers?: number;
  events: MemberEvent[];
  onPort?: (port: number) => void;
  onStep?: TrainOptions["onStep"];
  distributed?: TrainOptions["distributed"];
}) {
  return train({
    ...RUN,
    epochs: options.epochs,
    distributed: { workers: options.workers, shards: 4, ...options.distributed },
    serve: {
      hostname: "127.0.0.1",
      port: 0,
      token: TOKEN,
      elastic: { minMembers: options.minMembers, onMember: (e) => options.events.push(e) },
      onListening: (url) => options.onPort?.(Number(new URL(url).port)),
    },
    onStep: options.onStep,
  });
}

Deno.test("messages cross a WebSocket as JSON and raw arrays, and a bad frame is refused", () => {
  const message = {
    type: "work",
    id: 7,
    batch: { images: new Uint8Array([1, 2, 3]), labels: new Uint8Array([4]), count: 1 },
    g: new Float32Array([0.5, -0, Infinity, NaN]),
    d: new Float64Array([1e300]),
    i: new Int32Array([-5]),
  };
  const back = decodeMessage(encodeMessage(message), { maxBytes: 4096 });
  assert.deepEqual(back, message);
  assert.ok(Object.is((back.g as Float32Array)[1], -0));
  const bytes = encodeMessage(message);
  assert.throws(() => decodeMessage(bytes, { maxBytes: bytes.length - 1 }), /over the limit/);
  assert.throws(() => decodeMessage(bytes.subarray(0, 20), { maxBytes: 4096 }), /shorter/);
  const forge = (json: string) => {
    const head = new TextEncoder().encode(json);
    const frame = new Uint8Array(8 + head.length + 16);
    new DataView(frame.buffer).setUint32(0, head.length, true);
    frame.set(head, 4);
    return frame;
  };
  assert.throws(
    () => decodeMessage(forge('{"type":"x","a":{"$a":["f32",-8,1]}}'), { maxBytes: 999 }),
    /past the end/,
  );
  assert.throws(
    () => decodeMessage(forge('{"type":"x","a":{"$a":["f99",0,1]}}'), { maxBytes: 999 }),
    /malformed/,
  );
  assert.throws(() => decodeMessage(forge('{"type":'), { maxBytes: 999 }), /not JSON/);
  assert.throws(() => decodeMessage(forge("[1]"), { maxBytes: 999 }), /not a message/);
});

Deno.test("elastic flags and options are checked, each with one clear error", () => {
  const flags = (args: string[]) =>
    trainOptionsFromFlags(parseFlags({ args, options: TRAIN_FLAGS }).values);
  assert.throws(() => flags(["--elastic"]), /^UsageError: --elastic needs --serve HOST:PORT/);
  assert.throws(
    () => flags(["--serve", "127.0.0.1:0", "--min-members", "2"]),
    /--min-members needs --elastic/,
  );
  assert.throws(
    () => flags(["--serve", "127.0.0.1:0", "--elastic", "--min-members", "0"]),
    /--min-members/,
  );
  assert.deepEqual(
    flags(["--serve", "127.0.0.1:0", "--elastic", "--min-members", "3"]).serve,
    { hostname: "127.0.0.1", port: 0, elastic: { minMembers: 3 } },
  );
});

Deno.test("an elastic run is refused with a process group, a trace or profiling", async () => {
  const serve = { hostname: "127.0.0.1", port: 0, token: TOKEN, elastic: true };
  await assert.rejects(
    train({
      ...RUN,
      serve,
      distributed: {
        processGroup: { rank: 0, size: 2, masterAddr: "127.0.0.1", masterPort: 0, token: TOKEN },
      },
    }),
    (e: Error) => e instanceof UsageError && /one process/.test(e.message),
  );
  await assert.rejects(train({ ...RUN, serve, profile: true }), /profile does not go/);
  await assert.rejects(
    train({ ...RUN, serve: { ...serve, elastic: { minMembers: 0 } } }),
    /serve.elastic.minMembers must be an integer from 1 to 10000, got 0/,
  );
});

Deno.test("an elastic run of this process's workers has a fixed run's weights", async () => {
  const events: MemberEvent[] = [];
  const result = await elasticRun({ epochs: 3, workers: 2, events });
  assert.equal(result.checksum, await referenceChecksum(3));
  assert.deepEqual(events.map((e) => e.type), ["joined", "joined"]);
});

Deno.test({
  name: "Deno members join, are killed and rejoin; the run pauses below minMembers, " +
    "and its weights are the fixed run's",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const events: MemberEvent[] = [];
    const port = Promise.withResolvers<number>();
    const joiners: ReturnType<typeof spawnGuarded>[] = [];
    // The token goes in through a file: spawnGuarded clears the environment (DDP_TOKEN too).
    const tokenFile = await Deno.makeTempFile();
    await Deno.writeTextFile(tokenFile, TOKEN);
    const joinWithFile = async () => {
      const joiner = spawnGuarded(Deno.execPath(), [
        ...scriptArgs("scripts/train.ts", [
          "--join",
          `127.0.0.1:${await port.promise}`,
          "--token-file",
          tokenFile,
        ]),
      ]);
      joiners.push(joiner);
      return joiner;
    };
    let first: ReturnType<typeof spawnGuarded> | undefined;
    let killedAt: string | undefined;
    let stepsSeen = 0;
    let joinedAtStep = -1;
    const run = elasticRun({
      epochs: 3,
      workers: 1,
      minMembers: 2,
      events,
      onPort: (p) => {
        port.resolve(p);
        // Below minMembers from the start: the run waits for this one.
        void joinWithFile().then((j) => first = j);
      },
      onStep: (p) => {
        stepsSeen++;
        const joined = events.filter((e) => e.type === "joined").length;
        if (joined >= 2 && joinedAtStep < 0) joinedAtStep = stepsSeen;
        if (first && killedAt === undefined && joinedAtStep > 0 && stepsSeen >= joinedAtStep + 3) {
          killedAt = `epoch ${p.epoch} step ${p.step}`;
          first.child.kill("SIGKILL");
          // Below minMembers again: the run pauses until a new member joins.
          void joinWithFile();
        }
      },
    });
    try {
      const result = await run;
      assert.ok(killedAt !== undefined, "the first member was killed during the run");
      assert.equal(result.checksum, await referenceChecksum(3));
      const types = events.map((e) => e.type);
      assert.equal(types[0], "joined"); // worker 0
      assert.equal(types[1], "paused");
      const left = events.find((e) => e.type === "left") as Extract<MemberEvent, { type: "left" }>;
      assert.match(left.name, /^member 1 \(127\.0\.0\.1:\d+\)$/);
      assert.match(left.reason, /connection/);
      assert.ok(left.shards > 0, "the killed member computed shards before it died");
      assert.ok(types.indexOf("paused", 2) > types.indexOf("left"), "paused again after the kill");
      assert.equal(types.filter((t) => t === "resumed").length, 2);
      const second = await joiners[1].output;
      assert.equal(second.code, 0, second.stderr);
      assert.match(second.stderr, /joined the run at 127\.0\.0\.1:\d+ on webgpu/);
      const computed = Number(
        /the run ended \((\d+) shard\(s\) computed\)/.exec(second.stderr)?.[1],
      );
      assert.ok(computed > 0, `the second member computed shards: ${second.stderr}`);
    } finally {
      for (const j of joiners) {
        try {
          j.child.kill("SIGKILL");
        } catch { /* ended */ }
        await j.output;
      }
      await Deno.remove(tokenFile);
    }
  },
});

/** What a misbehaving member does instead of computing honestly. */
type Misdeed = "wrong-size" | "nan" | "oversize" | "stall";

/**
 * A member in this process that proves `token`, builds a real replica (a
 * member thread), and then does `misdeed` with its work; resolves with how
 * the run closed its socket.
 */
async function badMember(port: number, token: string, misdeed: Misdeed) {
  const socket = new WebSocket(`ws://127.0.0.1:${port}/member`);
  socket.binaryType = "arraybuffer";
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.addEventListener("close", (e) => resolve({ code: e.code, reason: e.reason }))
  );
  const thread = new WorkerThread(new URL("../workers/member_worker.ts", import.meta.url), {
    name: `bad-${misdeed}`,
  });
  let numReduced = 0;
  let works = 0;
  // The library's own answer to the challenge; a refusal shows in how the socket closed.
  const first = await admitted(socket, { token, address: `127.0.0.1:${port}` }).catch(() => null);
  if (first === null) {
    thread.close();
    return await closed;
  }
  const channel = new WebSocketChannel(socket, { maxBytes: 1 << 30, pending: [first] });
  channel.onMessage = (message: Message) => {
    // The stalling member answers its first shard, then keeps the second.
    if (message.type === "work" && misdeed === "stall" && ++works === 2) return;
    thread.send(message);
  };
  thread.onMessage = (message: Message) => {
    if (message.type === "memberReady") numReduced = (message as MemberReadyMessage).numReduced;
    if (message.type === "result" && misdeed !== "stall") {
      if (misdeed === "wrong-size") message.gradients = new Float32Array(numReduced - 1);
      if (misdeed === "nan") (message.gradients as Float32Array)[5] = NaN;
      if (misdeed === "oversize") message.gradients = new Float32Array(numReduced + 100_000);
    }
    channel.send(message);
  };
  const result = await closed;
  thread.close();
  return result;
}

Deno.test({
  name: "members that send a wrong-size, NaN or oversized gradient, or stall, are dropped, " +
    "naming them; a wrong token and a flood of joins are refused; the weights are the fixed run's",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const events: MemberEvent[] = [];
    const misdeeds: Misdeed[] = ["wrong-size", "nan", "oversize", "stall"];
    const port = Promise.withResolvers<number>();
    const run = elasticRun({
      epochs: 3,
      workers: 1,
      events,
      onPort: (p) => port.resolve(p),
      distributed: { stepTimeout: 3 },
    });
    const p = await port.promise;
    const bad = misdeeds.map((m) => badMember(p, TOKEN, m));
    // A wrong token: closed before anything else is said.
    const wrong = await badMember(p, "not the token at all, no", "nan");
    assert.deepEqual(wrong, { code: 4003, reason: "wrong token" });
    // 100 join attempts at once: beyond 20 a second, refused before the handshake.
    const flood = await Promise.all(
      Array.from({ length: 100 }, () =>
        new Promise<boolean>((resolve) => {
          const s = new WebSocket(`ws://127.0.0.1:${p}/member`);
          s.onopen = () => {
            s.close();
            resolve(true);
          };
          s.onerror = () => resolve(false);
        })),
    );
    // (20 a second: 100 at once straddle at most two seconds' allowances)
    assert.ok(flood.filter((opened) => !opened).length >= 60, `refused: ${flood}`);
    const result = await run;
    assert.equal(result.checksum, await referenceChecksum(3));
    const closes = await Promise.all(bad);
    const left = events.filter((e) => e.type === "left") as Extract<
      MemberEvent,
      { type: "left" }
    >[];
    const reasons = left.map((e) => `${e.name}: ${e.reason}`).join("\n");
    for (
      const pattern of [
        /it sent a gradient of \d+ values, expected \d+/,
        /it sent a gradient holding NaN \(element 5\)/,
        /it sent a frame of \d+ bytes, over the limit of \d+/,
        /it sent nothing for \d+ s, over its deadline of 3 s/,
      ]
    ) {
      assert.match(reasons, pattern);
    }
    for (const close of closes) assert.match(close.reason, /^dropped: it sent/);
  },
});

Deno.test("--join's usage errors are one line each, exit 2", async () => {
  const tokenFile = await Deno.makeTempFile();
  await Deno.writeTextFile(tokenFile, TOKEN);
  try {
    for (
      const [args, pattern] of [
        [["--join", "nowhere"], /^error: --join must be HOST:PORT, got "nowhere"$/],
        [["--join", "127.0.0.1:9", "--epochs", "2"], /^error: --join takes only --token-file/],
        [["--join", "127.0.0.1:9"], /^error: --join needs the job's token: DDP_TOKEN or/],
        [
          ["--join", "127.0.0.1:9", "--token-file", tokenFile],
          /^error: join: cannot reach a run at 127\.0\.0\.1:9$/,
        ],
      ] as const
    ) {
      const { code, stderr } = await spawnGuarded(
        Deno.execPath(),
        scriptArgs("scripts/train.ts", args),
      ).output;
      assert.equal(code, 2, stderr);
      const lines = stderr.trim().split("\n");
      assert.equal(lines.length, 1, stderr);
      assert.match(lines[0], pattern);
    }
  } finally {
    await Deno.remove(tokenFile);
  }
});

Deno.test({
  name: "a browser tab (headless Chromium, SwiftShader) joins from the page, computes shards, " +
    "and holds the run's weights at every epoch's end",
  ignore: await ignoredWithout("chromium"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const events: MemberEvent[] = [];
    const url = Promise.withResolvers<string>();
    const run = train({
      ...RUN,
      epochs: 3,
      distributed: { workers: 1, shards: 4 },
      serve: {
        hostname: "127.0.0.1",
        port: 0,
        token: TOKEN,
        // The tab is needed: the run waits for it.
        elastic: { minMembers: 2, onMember: (e) => events.push(e) },
        onListening: (u) => url.resolve(u),
      },
    });
    const page = `${await url.promise}#token=${encodeURIComponent(TOKEN)}`;
    const tab = await withBrowserPage(
      page,
      async (page) => {
        await page.waitFor("!document.getElementById('join').hidden", 60_000);
        await page.evaluate("document.getElementById('joinButton').click(), true");
        await page.waitFor("window.member.ended", 240_000);
        return {
          member: await page.evaluate<{ device: string; shards: number; ended: string }>(
            "window.member",
          ),
          table: await page.evaluate<string>("document.getElementById('members').innerText"),
        };
      },
      undefined,
      { webgpu: true },
    );
    const result = await run;
    assert.equal(tab.member.ended, "the run ended", JSON.stringify(tab));
    assert.match(tab.member.device, /^webgpu: google swiftshader \(tfjs kernels\)$/);
    assert.ok(tab.member.shards > 0, "the tab computed shards");
    // Never dropped: its weights' checksum matched the run's after every epoch.
    assert.deepEqual(events.filter((e) => e.type === "left"), []);
    const counted = Number(
      /(\d+) counted/.exec(tab.table.split("\n").find((l) => /swiftshader/.test(l)) ?? "")?.[1],
    );
    // The tab's results count when they come first; against llvmpipe's, SwiftShader with
    // tfjs's kernels differs at the float level: measured and printed, bounded loosely.
    const fixed = await referenceRun(3);
    let worst = 0;
    let scale = 0;
    for (let i = 0; i < fixed.weights.length; i++) {
      worst = Math.max(worst, Math.abs(result.weights[i] - fixed.weights[i]));
      scale = Math.max(scale, Math.abs(fixed.weights[i]));
    }
    console.log(
      `tab: ${tab.member.shards} shard(s) computed, ${counted} counted; weights vs the fixed ` +
        `run: max |Δ| ${worst.toExponential(2)} (largest weight ${scale.toFixed(3)})`,
    );
    if (counted === 0) assert.equal(result.checksum, fixed.checksum);
    else assert.ok(worst < 1e-2 * scale, `max |Δ| ${worst}`);
  },
});
