/**
 * Joining a served elastic run from another Deno process (`deno task train
 * --join HOST:PORT`): this thread proves the token over a WebSocket, then
 * relays messages between the run and a member thread
 * (`workers/member_worker.ts`, the code the serving process's own members
 * run). Leaving is closing the socket: the run hands this member's shard to
 * another and goes on.
 *
 * A member builds only built-in models: a run that names a module of its own
 * (a custom model) is refused, so that a server cannot make a member run
 * code it chose.
 *
 * @module
 */

import type { Message } from "../../collective/channel.ts";
import { importToken } from "../../collective/tcp/auth.ts";
import { WebSocketChannel } from "../../collective/ws_channel.ts";
import { admitted } from "../../collective/ws_admit.ts";
import { WorkerThread } from "../../collective/worker_thread.ts";
import { UsageError } from "../../errors.ts";
import { ThreadWatch } from "../../util/thread_watch.ts";
import type { MemberInitMessage, MemberReadyMessage } from "../shared/member_protocol.ts";

/** What {@linkcode joinRun} needs. */
export interface JoinOptions {
  /** The serving run's `HOST:PORT` (its `--serve`). */
  address: string;
  /** The job's token. */
  token: string;
  /** Aborting it leaves the run. */
  signal?: AbortSignal;
  /** Told, a line each: joined (with the device), and why it ended. */
  onLine?: (line: string) => void;
  /**
   * For benchmarks: holds each result until its shard has taken this many
   * times as long as it did (default 1), as a slower device would.
   */
  slowdown?: number;
}

/** How a membership ended. */
export interface JoinResult {
  /** True when the run ended or this member left (asked to); false when it was dropped or failed. */
  clean: boolean;
  /** Why it ended, as the run said it, or what failed. */
  reason: string;
  /** Shards this member computed. */
  shards: number;
}

/** Frames the run may send a member: its weights and a shard's examples fit easily. */
const MAX_FRAME_BYTES = 2 ** 30;

/**
 * Joins the elastic run served at `options.address`, computes what it is
 * handed until the run ends, this member is dropped, or `options.signal`
 * aborts; resolves with how it ended. Usage errors (a bad address or token,
 * a run that takes no members) reject with a `UsageError`.
 *
 * @example
 * ```ts ignore
 * const ended = await joinRun({ address: "10.0.0.5:8080", token: Deno.env.get("DDP_TOKEN")! });
 * console.log(`left after ${ended.shards} shards: ${ended.reason}`);
 * ```
 */
export async function joinRun(options: JoinOptions): Promise<JoinResult> {
  const url = memberUrl(options.address);
  await importToken({ token: options.token }).catch((error) => {
    throw new UsageError(`join: ${error.message}`); // too short
  });
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  const first = await admitted(socket, options).catch((error) => {
    throw new UsageError(`join: ${error.message}`);
  });
  const channel = new WebSocketChannel(socket, { maxBytes: MAX_FRAME_BYTES, pending: [first] });
  const threads = new ThreadWatch();
  const thread = new WorkerThread(new URL("../../../workers/member_worker.ts", import.meta.url), {
    name: "member",
    label: "join↔member",
  });
  threads.add(thread);
  let shards = 0;
  const slowdown = options.slowdown ?? 1;
  const workSince: number[] = [];
  const ended = Promise.withResolvers<JoinResult>();
  const end = (result: JoinResult) => ended.resolve(result);
  channel.onError = (error) => {
    const reason = error.message.replace(/^its connection closed \((.*)\)$/, "$1");
    end({
      clean: reason === "the run ended",
      reason,
      shards,
    });
  };
  channel.onMessage = (message) => {
    if (message.type === "memberInit") {
      const { model } = (message as MemberInitMessage).config;
      if (model.name === "custom") {
        const reason = "the run trains a model of its own (a module); a member that joins " +
          "builds built-in models only";
        channel.send({ type: "error", message: reason });
        end({ clean: false, reason, shards });
        return;
      }
    }
    if (message.type === "work") workSince.push(performance.now());
    thread.send(message, buffersOf(message));
  };
  thread.onMessage = (message) => {
    if (message.type === "memberReady") {
      const { device } = message as MemberReadyMessage;
      options.onLine?.(
        `joined the run at ${options.address} on ${device.backend}: ${device.adapter}`,
      );
    }
    if (message.type === "result") {
      shards++;
      const held = (slowdown - 1) * (performance.now() - workSince.shift()!);
      if (held > 0) return void setTimeout(() => channel.send(message), held);
    }
    channel.send(message);
    if (message.type === "error") end({ clean: false, reason: String(message.message), shards });
  };
  thread.onError = (error) => {
    channel.send({ type: "error", message: `its member thread failed: ${error.message}` });
    end({ clean: false, reason: `the member thread failed: ${error.message}`, shards });
  };
  const leave = () => end({ clean: true, reason: "left (asked to stop)", shards });
  options.signal?.addEventListener("abort", leave, { once: true });
  if (options.signal?.aborted) leave();
  try {
    return await ended.promise;
  } finally {
    options.signal?.removeEventListener("abort", leave);
    channel.close();
    threads.mark();
    thread.close();
    await threads.exited();
  }
}

/**
 * `HOST:PORT` as the run's member endpoint; a usage error says what is wrong.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { memberUrl } from "./join.ts";
 *
 * assert.equal(memberUrl("10.0.0.5:8080"), "ws://10.0.0.5:8080/member");
 * assert.equal(memberUrl("[::1]:8080"), "ws://[::1]:8080/member");
 * assert.throws(() => memberUrl("10.0.0.5"), /--join must be HOST:PORT, got "10.0.0.5"/);
 * ```
 */
export function memberUrl(address: string): string {
  const match = /^(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]+):(\d{1,5})$/.exec(address);
  if (!match || Number(match[2]) > 65535 || Number(match[2]) === 0) {
    throw new UsageError(`--join must be HOST:PORT, got ${JSON.stringify(address)}`);
  }
  return `ws://${match[1]}:${match[2]}/member`;
}

/** The buffers a decoded message holds (its frame's, or copies): moved to the thread, not copied. */
function buffersOf(message: Message): ArrayBuffer[] {
  const found = new Set<ArrayBuffer>();
  const visit = (value: unknown) => {
    if (ArrayBuffer.isView(value)) found.add(value.buffer as ArrayBuffer);
    else if (typeof value === "object" && value !== null) Object.values(value).forEach(visit);
  };
  visit(message);
  return [...found];
}
