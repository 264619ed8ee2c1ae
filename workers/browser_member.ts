/**
 * Web Worker entry point: a browser tab's member of a served elastic run.
 * The server bundles this module for the browser from the same sources as
 * every other member (`lib/train/worker/member_service.ts`: the replica, the
 * kernels, the models). The page's Join button starts it as a module worker
 * (`new Worker("/member.js", { type: "module" })`) and posts it the token;
 * it computes on the browser's WebGPU adapter in its own thread, so the page
 * stays responsive, and tells the page what it does ({@linkcode MemberToPage}).
 *
 * @module
 */

import { admitted } from "../lib/collective/ws_admit.ts";
import { WebSocketChannel } from "../lib/collective/ws_channel.ts";
import { serveMember } from "../lib/train/worker/member_service.ts";

/** What the page posts to the member's worker. */
export type PageToMember =
  /** Join the run that served the page, proving `token`. */
  | { type: "join"; token: string }
  /** Leave the run (it hands this tab's shard to another member). */
  | { type: "leave" };

/** What the member's worker posts to the page. */
export type MemberToPage =
  /** The replica is built: `device` computes from now on. */
  | { type: "ready"; device: string }
  /** After each shard: shards computed, and the last one's milliseconds. */
  | { type: "activity"; shards: number; lastShardMs: number }
  /** The membership ended, and why ("left", the run's reason, or "failed: …"). */
  | { type: "ended"; reason: string };

const scope = globalThis as unknown as {
  postMessage(message: MemberToPage): void;
  addEventListener(type: "message", listener: (event: MessageEvent<PageToMember>) => void): void;
};
let socket: WebSocket | undefined;
let left = false;

scope.addEventListener("message", (event) => {
  const message = event.data;
  if (message.type === "leave") {
    left = true;
    if (socket) socket.close(1000, "left");
    else scope.postMessage({ type: "ended", reason: "left" });
    return;
  }
  if (socket) return; // one membership per worker
  membership(message.token).then(
    (reason) => scope.postMessage({ type: "ended", reason }),
    (error) => scope.postMessage({ type: "ended", reason: `failed: ${(error as Error).message}` }),
  );
});

/** Joins the run that served the page, computes until it ends; resolves with why. */
async function membership(token: string): Promise<string> {
  const joined = new WebSocket(`ws://${location.host}/member`);
  socket = joined;
  joined.binaryType = "arraybuffer";
  const first = await admitted(joined, { token, address: location.host });
  const closed = new Promise<string>((resolve) =>
    joined.addEventListener("close", (e) => resolve(e.reason || `disconnected (${e.code})`))
  );
  const channel = new WebSocketChannel(joined, { maxBytes: 2 ** 30, pending: [first] });
  const served = serveMember(channel, {
    builtInOnly: true,
    // Measured in headless Chromium: the fast forward convolution stops SwiftShader's device
    // ("A valid external Instance reference no longer exists"); tfjs's kernels run there.
    kernelsFor: (adapter, wanted) => /swiftshader/i.test(adapter) ? "tfjs" : wanted,
    onReady: (ready) =>
      scope.postMessage({
        type: "ready",
        device:
          `${ready.device.backend}: ${ready.device.adapter} (${ready.device.kernels} kernels)`,
      }),
    onActivity: (activity) =>
      scope.postMessage({
        type: "activity",
        shards: activity.shards,
        lastShardMs: activity.lastShardMs,
      }),
  });
  const why = await Promise.race([closed, served.then(() => "stopped")]);
  return left ? "left" : why;
}
