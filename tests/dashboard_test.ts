/**
 * The live dashboard (`serve`): a page that proves the token sees the run's
 * start, steps, epochs and end, the same figures `train()` returns; a wrong
 * token, an oversized frame and a flood of sockets are refused, and nothing
 * but the page and its socket is served.
 */

import assert from "node:assert/strict";
import { importToken } from "../lib/collective/tcp/auth.ts";
import { type DashboardEvent, serveDashboard } from "../lib/serve/dashboard.ts";
import { train } from "../lib/train/coordinator/train.ts";
import { imageLikeDataset } from "./helpers.ts";
import { withBrowserPage } from "./browser.ts";
import { ignoredWithout } from "./skips.ts";
import { loopbackGroup } from "./process_helpers.ts";

const TOKEN = "the dashboard test's token";

/** A small run on 2 workers. */
const RUN = {
  model: { name: "nin", inputSize: 67, width: 0.125 },
  data: { train: imageLikeDataset(32, 1), test: imageLikeDataset(8, 2) },
  batchSize: 8,
  distributed: { workers: 2 },
} as const;

/** A socket to the dashboard at `port` that answers its challenge with `token`; collects events. */
function page(port: number, token: string) {
  const socket = new WebSocket(`ws://127.0.0.1:${port}/ws`);
  const events: DashboardEvent[] = [];
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    socket.onclose = (e) => resolve({ code: e.code, reason: e.reason });
  });
  const admitted = Promise.withResolvers<void>();
  socket.onmessage = async (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "challenge") {
      const key = await crypto.subtle.importKey(
        "raw",
        new TextEncoder().encode(token),
        { name: "HMAC", hash: "SHA-256" },
        false,
        ["sign"],
      );
      const mac = new Uint8Array(
        await crypto.subtle.sign(
          "HMAC",
          key,
          new TextEncoder().encode(`ddp-dashboard:${event.challenge}`),
        ),
      );
      const hex = [...mac].map((b) => b.toString(16).padStart(2, "0")).join("");
      socket.send(JSON.stringify({ type: "answer", mac: hex }));
    } else if (event.type === "history") {
      events.push(...event.events);
      admitted.resolve();
    } else {
      events.push(event);
    }
  };
  return { socket, events, closed, admitted: admitted.promise };
}

Deno.test("a served run: a page with the token sees its start, every step and epoch, and its end", async () => {
  const listening = Promise.withResolvers<string>();
  let viewer: ReturnType<typeof page> | undefined;
  const result = await train({
    ...RUN,
    epochs: 2,
    serve: { hostname: "127.0.0.1", port: 0, token: TOKEN, onListening: listening.resolve },
    async onStart() {
      const url = new URL(await listening.promise);
      assert.equal(url.hash, ""); // the token was given: not in the address
      viewer = page(Number(url.port), TOKEN);
      await viewer.admitted;
    },
  });
  const { events, closed } = viewer!;
  assert.deepEqual((await closed).reason, "the run ended");
  const start = events.find((e) => e.type === "start");
  assert.ok(start && start.type === "start");
  assert.deepEqual(start.members.map((m) => [m.name, m.shards]), [
    ["worker 0", "0 of 2"],
    ["worker 1", "1 of 2"],
  ]);
  assert.equal(events.filter((e) => e.type === "step").length, 2 * start.stepsPerEpoch);
  const epochs = events.flatMap((e) => e.type === "epoch" ? [e] : []);
  assert.deepEqual(
    epochs.map((e) => [e.epoch, e.loss, e.testAcc]),
    result.history.map((e) => [e.epoch, e.loss, e.testAcc]),
  );
  assert.deepEqual(events.at(-1), { type: "end", message: "the run finished" });
});

Deno.test("in a job of two processes, rank 0 serves the dashboard and shows every replica; rank 1 does not serve", async () => {
  const group = loopbackGroup(2, TOKEN);
  const served: string[] = [];
  let viewer: ReturnType<typeof page> | undefined;
  const run = async (rank: number) =>
    await train({
      ...RUN,
      epochs: 1,
      distributed: {
        workers: 1,
        processGroup: await group(rank),
      },
      // Both are given the same address, as a launcher gives every process the same flags.
      serve: { hostname: "127.0.0.1", port: 0, onListening: (url) => served.push(url) },
      async onStart() {
        if (rank !== 0) return;
        viewer = page(Number(new URL(served[0]).port), TOKEN);
        await viewer.admitted;
      },
    });
  await Promise.all([run(0), run(1)]);
  assert.equal(served.length, 1);
  const start = viewer!.events.find((e) => e.type === "start");
  assert.ok(start && start.type === "start");
  assert.deepEqual(start.members.map((m) => [m.name, m.shards]), [
    ["rank 0 worker 0", "0 of 2"],
    ["rank 1 worker 0", "1 of 2"],
  ]);
  assert.equal(start.members[1].device, "(rank 1's)");
});

Deno.test("the dashboard refuses a wrong token, an oversized frame and a flood of sockets; it serves nothing else", async () => {
  const key = await importToken({ token: TOKEN });
  const dashboard = serveDashboard({ hostname: "127.0.0.1", port: 0, key });
  try {
    dashboard.publish({ type: "end", message: "kept for later pages" });
    const wrong = page(dashboard.port, "not the token, but long enough");
    assert.deepEqual(await wrong.closed, { code: 4003, reason: "wrong token" });
    assert.deepEqual(wrong.events, []);

    const big = new WebSocket(`ws://127.0.0.1:${dashboard.port}/ws`);
    big.onopen = () => big.send("x".repeat(4096));
    const bigClosed = await new Promise<CloseEvent>((resolve) => (big.onclose = resolve));
    assert.equal(bigClosed.reason, "frame too large");

    const right = page(dashboard.port, TOKEN);
    await right.admitted;
    assert.deepEqual(right.events, [{ type: "end", message: "kept for later pages" }]);
    right.socket.close();
    await right.closed;

    // 100 sockets at once: at most 20 a second are taken, the others get 429.
    const statuses = await Promise.all(
      Array.from({ length: 100 }, () =>
        fetch(`http://127.0.0.1:${dashboard.port}/ws`, {
          headers: {
            upgrade: "websocket",
            connection: "upgrade",
            "sec-websocket-key": btoa("0123456789abcdef"),
            "sec-websocket-version": "13",
          },
        }).then(async (response) => {
          await response.body?.cancel();
          return response.status;
        })),
    );
    assert.ok(statuses.filter((s) => s === 429).length >= 100 - 2 * 20, statuses.join());

    const home = await fetch(`http://127.0.0.1:${dashboard.port}/`);
    assert.match(home.headers.get("content-security-policy")!, /default-src 'none'/);
    assert.match(await home.text(), /<canvas id="loss"/);
    for (const path of ["/../deno.json", "/etc/passwd", "/ws?x=1#y"]) {
      const response = await fetch(`http://127.0.0.1:${dashboard.port}${path}`);
      await response.body?.cancel();
      assert.equal(response.status, 404, path);
    }
  } finally {
    await dashboard.close();
  }
});

Deno.test({
  name:
    "in a real browser (headless Chromium): the page proves the token and draws the run as it goes",
  ignore: await ignoredWithout("chromium"),
  fn: async () => {
    const listening = Promise.withResolvers<string>();
    const shown = Promise.withResolvers<string>();
    const result = await train({
      ...RUN,
      epochs: 3,
      serve: { hostname: "127.0.0.1", port: 0, onListening: listening.resolve },
      async onEpoch(record) {
        if (record.epoch !== 2) return;
        // No token given: a fresh one, in the address's fragment (which the browser keeps).
        const url = await listening.promise;
        assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/#token=[0-9a-f]{48}$/);
        shown.resolve(
          await withBrowserPage(url, async (page) => {
            await page.waitFor(`document.getElementById("status").textContent === "live"`);
            return await page.evaluate<string>(`document.getElementById("epochs").innerText`);
          }),
        );
      },
    });
    const rows = (await shown.promise).trim().split("\n").slice(1).map((row) => row.split("\t"));
    assert.deepEqual(
      rows.map(([epoch, loss, , testAcc]) => [Number(epoch), loss, testAcc]),
      result.history.slice(0, 2).map((e) => [e.epoch, e.loss.toFixed(3), e.testAcc.toFixed(3)]),
    );
  },
});
