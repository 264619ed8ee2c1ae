/**
 * Elastic runs (`serve.elastic`), measured in one process on loopback:
 *
 * - **transport**: one NiN gradient (a `result` message) from a member to
 *   the serving process and a short answer back, over the WebSocket path
 *   members use (`WebSocketChannel`: JSON plus raw arrays, in binary
 *   frames) and over the TCP process group's framing (`encodeFrame`,
 *   `FrameReader`) on a plain connection;
 * - **phases**: one elastic run whose membership changes at epoch ends
 *   (training waits for `onEpoch`): this process's worker alone, then with a
 *   member of the same speed that joins (`joinRun`, in this process), then
 *   with a member 4 times slower instead (its results held back,
 *   `JoinOptions.slowdown`), then alone again; the time per step in each.
 *
 * Both members compute on this machine's device, beside the serving
 * process's worker: on a machine of 2 cores they share them, so a second
 * member adds little here; what the slow member's row shows is that its
 * shards do not hold the steps up (by the policy in `elastic_group.ts`).
 *
 * @module
 */

import { WebSocketChannel } from "../collective/ws_channel.ts";
import type { Message } from "../collective/channel.ts";
import { writeAll } from "../collective/tcp/auth.ts";
import { encodeFrame, float32Bytes, FrameReader } from "../collective/tcp/frame.ts";
import { joinRun } from "../train/coordinator/join.ts";
import { train } from "../train/coordinator/train.ts";
import type { MemberEvent } from "../train/shared/member_protocol.ts";
import { table } from "./report.ts";
import { spread } from "./report.ts";
import { summarize, type Summary, syntheticDataset } from "./stats.ts";

/** The two transports carrying one gradient, ms per round trip. */
export interface TransportResult {
  /** Float32 values in the gradient. */
  length: number;
  /** Bytes of the gradient. */
  bytes: number;
  websocket: Summary;
  tcp: Summary;
}

/** One phase of the elastic run. */
export interface PhaseResult {
  /** Who computes, e.g. `"worker 0 + a member 4× slower"`. */
  members: string;
  /** Ms per step (its first two steps left out: a member's first shard compiles its shaders). */
  stepMs: Summary;
  /** Shards a joined member computed in this phase, and of those, how many counted. */
  joined?: { shards: number; counted: number };
}

/** What {@linkcode benchElastic} measured. */
export interface ElasticBenchResult {
  transport: TransportResult;
  phases: PhaseResult[];
}

const TOKEN = "the elastic benchmark's token";

/**
 * Measures the transports with a `length`-value gradient, `repeats` times,
 * and the phases with NiN at `inputSize` px and `width`, `stepsPerPhase`
 * steps of `batchSize` images in 4 shards each.
 */
export async function benchElastic(options: {
  length: number;
  repeats: number;
  inputSize: number;
  width: number;
  batchSize: number;
  stepsPerPhase: number;
}): Promise<ElasticBenchResult> {
  const transport = {
    length: options.length,
    bytes: options.length * 4,
    websocket: await timeWebSocket(options.length, options.repeats),
    tcp: await timeTcp(options.length, options.repeats),
  };
  return { transport, phases: await timePhases(options) };
}

/** A result message carrying `length` values. */
function resultOf(length: number): Message {
  const gradients = new Float32Array(length);
  for (let i = 0; i < length; i++) gradients[i] = Math.sin(i);
  return { type: "result", id: 1, gradients, lossSum: 1, correct: 1, count: 1 };
}

/**
 * Two {@linkcode WebSocketChannel}s joined by a WebSocket on loopback: the
 * serving side (a `Deno.serve` socket, as the dashboard's) and the member's
 * (a client socket, as `--join`'s); `close` ends both and the server.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loopbackChannels } from "./elastic_bench.ts";
 *
 * const { serving, member, close } = await loopbackChannels({ maxBytes: 1024 });
 * const got = new Promise((resolve) => serving.onMessage = resolve);
 * member.send({ type: "hello", values: new Float32Array([1, 2]) });
 * assert.deepEqual(await got, { type: "hello", values: new Float32Array([1, 2]) });
 * await close();
 * ```
 */
export async function loopbackChannels(options: { maxBytes: number }): Promise<{
  serving: WebSocketChannel;
  member: WebSocketChannel;
  close(): Promise<void>;
}> {
  const accepted = Promise.withResolvers<WebSocket>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    accepted.resolve(socket);
    return response;
  });
  const client = new WebSocket(`ws://127.0.0.1:${server.addr.port}/`);
  await new Promise((resolve, reject) => {
    client.onopen = resolve;
    client.onerror = reject;
  });
  const serving = new WebSocketChannel(await accepted.promise, options);
  const member = new WebSocketChannel(client, options);
  return {
    serving,
    member,
    async close() {
      member.close();
      serving.close();
      await server.shutdown();
    },
  };
}

async function timeWebSocket(length: number, repeats: number): Promise<Summary> {
  const { serving, member, close } = await loopbackChannels({ maxBytes: 1 << 30 });
  serving.onMessage = (message) => serving.send({ type: "ack", id: message.id as number });
  const message = resultOf(length);
  const times: number[] = [];
  try {
    for (let i = 0; i <= repeats; i++) {
      const answered = Promise.withResolvers<void>();
      member.onMessage = () => answered.resolve();
      const start = performance.now();
      member.send(message);
      await answered.promise;
      if (i > 0) times.push(performance.now() - start); // the first warms up
    }
  } finally {
    await close();
  }
  return summarize(times);
}

async function timeTcp(length: number, repeats: number): Promise<Summary> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const serverConn = await listener.accept();
  for (const conn of [client, serverConn]) conn.setNoDelay(true);
  const serverReader = new FrameReader(serverConn, { peer: "member" });
  const clientReader = new FrameReader(client, { peer: "serving process" });
  const served = (async () => {
    for (;;) {
      const frame = await serverReader.read().catch(() => undefined);
      if (frame === undefined) return;
      await writeAll(serverConn, encodeFrame({ type: "ack" }));
    }
  })();
  const gradients = resultOf(length).gradients as Float32Array;
  const times: number[] = [];
  try {
    for (let i = 0; i <= repeats; i++) {
      const start = performance.now();
      // Encoding is part of the path, as the WebSocket's is.
      await writeAll(client, encodeFrame({ type: "result", id: 1 }, float32Bytes(gradients)));
      await clientReader.read();
      if (i > 0) times.push(performance.now() - start);
    }
  } finally {
    client.close();
    await served;
    try {
      serverConn.close();
    } catch {
      // closed already: reading its end closes it
    }
    listener.close();
  }
  return summarize(times);
}

async function timePhases(options: {
  inputSize: number;
  width: number;
  batchSize: number;
  stepsPerPhase: number;
}): Promise<PhaseResult[]> {
  const plan = [
    { members: "worker 0 alone" },
    { members: "worker 0 + a member of its speed", slowdown: 1 },
    { members: "worker 0 + a member 4× slower", slowdown: 4 },
    { members: "worker 0 alone, again" },
  ];
  const events: MemberEvent[] = [];
  const stepTimes: number[][] = plan.map(() => []);
  const address = Promise.withResolvers<string>();
  let joined: { leave: AbortController; ended: ReturnType<typeof joinRun> } | undefined;
  const joinedCounts: (PhaseResult["joined"])[] = [];
  /** Why the bench's member ended before it should have (it failed to join, or was dropped). */
  let failure: Error | undefined;
  /** Waits until an event `matches`; throws once the member has failed. */
  const until = async (matches: (e: MemberEvent) => boolean) => {
    while (!events.some(matches)) {
      if (failure) throw failure;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  let lastSeconds = 0;
  const leave = async (phase: number) => {
    if (!joined) return;
    const before = events.length;
    joined.leave.abort();
    await joined.ended;
    await until((e) => e.type === "left" && events.indexOf(e) >= before);
    const left = events.findLast((e) => e.type === "left") as Extract<
      MemberEvent,
      { type: "left" }
    >;
    joinedCounts[phase] = { shards: left.shards, counted: left.counted };
    joined = undefined;
  };
  await train({
    model: { name: "nin", inputSize: options.inputSize, width: options.width },
    data: {
      train: syntheticDataset(options.batchSize * options.stepsPerPhase, { seed: 1 }),
      test: syntheticDataset(options.batchSize, { seed: 2 }),
    },
    batchSize: options.batchSize,
    epochs: plan.length,
    seed: 1,
    distributed: { workers: 1, shards: 4 },
    serve: {
      hostname: "127.0.0.1",
      port: 0,
      token: TOKEN,
      elastic: { onMember: (e) => events.push(e) },
      onListening: (url) => address.resolve(new URL(url).host),
    },
    onStep: (p) => {
      if (p.step > 2) stepTimes[p.epoch - 1].push((p.seconds - lastSeconds) * 1000);
      lastSeconds = p.seconds;
    },
    // Training waits for onEpoch: membership changes between phases.
    onEpoch: async (record) => {
      await leave(record.epoch - 1);
      const next = plan[record.epoch];
      if (next?.slowdown !== undefined) {
        const before = events.length;
        const leaveController = new AbortController();
        const ended = joinRun({
          address: await address.promise,
          token: TOKEN,
          signal: leaveController.signal,
          slowdown: next.slowdown,
        });
        ended.then(
          (end) => {
            if (!leaveController.signal.aborted) {
              failure = new Error(`the bench's member ended: ${end.reason}`);
            }
          },
          (error) => failure = error,
        );
        joined = { leave: leaveController, ended };
        await until((e) => e.type === "joined" && events.indexOf(e) >= before);
      }
      lastSeconds = record.seconds;
    },
  });
  return plan.map((phase, i) => ({
    members: phase.members,
    stepMs: summarize(stepTimes[i]),
    ...(joinedCounts[i] ? { joined: joinedCounts[i] } : {}),
  }));
}

/** The elastic section's tables. */
export function elasticTable(result: ElasticBenchResult): string {
  const { transport } = result;
  const ratio = transport.websocket.median / transport.tcp.median;
  const first = result.phases[0].stepMs.median;
  return table([
    ["path", "ms per gradient", "vs TCP"],
    ["WebSocket (members)", spread(transport.websocket, 1), `${ratio.toFixed(2)}×`],
    ["TCP framing (process group)", spread(transport.tcp, 1), "1.00×"],
  ]) + "\n\n" + table([
    ["members", "ms per step", "vs alone", "joined member's shards (counted)"],
    ...result.phases.map((phase) => [
      phase.members,
      spread(phase.stepMs, 0),
      `${(phase.stepMs.median / first).toFixed(2)}×`,
      phase.joined ? `${phase.joined.shards} (${phase.joined.counted})` : "",
    ]),
  ]);
}
