/**
 * Browser entry point: the tab of a served elastic run's page joins the run
 * as a member. The server bundles this module for the browser from the same
 * sources as every other member (`lib/train/worker/member_service.ts`: the
 * replica, the kernels, the models), and the page loads it when its Join
 * button is pressed; the member then runs in the page's thread, on the
 * browser's WebGPU adapter.
 *
 * @module
 */

import { admitted } from "../lib/collective/ws_admit.ts";
import { WebSocketChannel } from "../lib/collective/ws_channel.ts";
import { type MemberActivity, serveMember } from "../lib/train/worker/member_service.ts";

/** A tab's membership. */
export interface PageMember {
  /** Leaves the run (it hands this tab's shard to another member). */
  leave(): void;
  /** Resolves with why the membership ended. */
  ended: Promise<string>;
}

/**
 * Joins the run that served this page, proving `token`; `onReady` is told
 * the device once the replica is built, `onActivity` after each piece of work.
 */
export async function joinFromPage(options: {
  token: string;
  onReady?: (device: string) => void;
  onActivity?: (activity: MemberActivity) => void;
}): Promise<PageMember> {
  const socket = new WebSocket(`ws://${location.host}/member`);
  socket.binaryType = "arraybuffer";
  const first = await admitted(socket, { token: options.token, address: location.host });
  const closed = new Promise<string>((resolve) =>
    socket.addEventListener("close", (e) => resolve(e.reason || `disconnected (${e.code})`))
  );
  const channel = new WebSocketChannel(socket, { maxBytes: 2 ** 30, pending: [first] });
  let left = false;
  const served = serveMember(channel, {
    builtInOnly: true,
    // Measured in headless Chromium: the fast forward convolution stops SwiftShader's device
    // ("A valid external Instance reference no longer exists"); tfjs's kernels run there.
    kernelsFor: (adapter, wanted) => /swiftshader/i.test(adapter) ? "tfjs" : wanted,
    onReady: (ready) =>
      options.onReady?.(
        `${ready.device.backend}: ${ready.device.adapter} (${ready.device.kernels} kernels)`,
      ),
    onActivity: options.onActivity,
  });
  return {
    leave() {
      left = true;
      socket.close(1000, "left");
    },
    ended: Promise.race([closed, served.then(() => "stopped")]).then((why) => left ? "left" : why),
  };
}
