/**
 * The live dashboard of a run (`--serve HOST:PORT`): an HTTP server in the
 * coordinator's thread that serves one page and a WebSocket endpoint. The
 * page draws the run's loss and accuracy, per epoch and as it runs, its
 * speed, and each member with its device and share of the shards.
 *
 * Nothing is told without the job's token: a socket first gets a random
 * challenge and must answer HMAC-SHA256(token, "ddp-dashboard:" + challenge)
 * within 10 s — the token itself never travels, and the page keeps it in
 * its URL's fragment, which browsers do not send. Frames from a page are
 * bounded (1 KiB), and new sockets are rate-limited (20 a second); what a
 * page sends is never more than its answer: it cannot read or write files.
 *
 * @module
 */

import { DASHBOARD_PAGE } from "./_dashboard_page.ts";

/** What a dashboard shows: the events of the run, in order. */
export type DashboardEvent =
  | {
    type: "start";
    /** One line on the model and data. */
    title: string;
    /** Steps per epoch. */
    stepsPerEpoch: number;
    /** Epochs planned. */
    epochs: number;
    /** Every member: where it runs, and which shards of each batch it computes. */
    members: { name: string; device: string; shards: string }[];
    /** An elastic run: the page offers to join it. */
    joinable?: boolean;
  }
  | {
    type: "step";
    epoch: number;
    step: number;
    steps: number;
    loss: number;
    trainAcc: number;
    examplesPerSec: number;
  }
  | {
    type: "epoch";
    epoch: number;
    loss: number;
    trainAcc: number;
    testAcc: number;
    examplesPerSec: number;
    seconds: number;
  }
  | {
    type: "members";
    /** The members now (an elastic run's change as they join and leave). */
    members: { name: string; device: string; shards: string }[];
  }
  | { type: "end"; message: string };

/** Where and how to serve. */
export interface DashboardOptions {
  /** Interface to listen on (e.g. `"127.0.0.1"`). */
  hostname: string;
  /** Port (0: a free one, told to `onListening`). */
  port: number;
  /** The HMAC key of the job's token (see `importToken`). */
  key: CryptoKey;
  /** Told the port once the server listens. */
  onListening?: (address: { hostname: string; port: number }) => void;
  /**
   * Members may join (an elastic run): a socket at `/member` that proves the
   * token is handed to the function given to {@linkcode Dashboard.acceptMembers}
   * (kept until there is one). Without it, such a socket is told the run takes none.
   */
  members?: boolean;
  /**
   * The member code for a browser tab, served at `/member.js` (built on the
   * first request, see `workers/browser_member.ts`); absent: 404.
   */
  memberScript?: () => Promise<string>;
}

/** A running dashboard. */
export interface Dashboard {
  /** The port it listens on. */
  readonly port: number;
  /** Sends `event` to every page that proved the token, and keeps it for those that come later. */
  publish(event: DashboardEvent): void;
  /**
   * From now on, every socket at `/member` that proves the token goes to
   * `accept` (those that came before, too), with the peer's address.
   */
  acceptMembers(accept: (socket: WebSocket, peer: string) => void): void;
  /** Closes every socket and the server. */
  close(): Promise<void>;
}

/** Bytes a page may send in one frame (its answer is 64 hex digits). */
export const MAX_FRAME_BYTES = 1024;
/** New sockets accepted per second; more are refused with 429. */
export const SOCKETS_PER_SECOND = 20;
/** Milliseconds a socket has to answer its challenge. */
const ANSWER_MS = 10_000;
/** Step events kept for a page that comes later (epochs are all kept). */
const STEPS_KEPT = 2000;

/**
 * Starts the dashboard's server.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { serveDashboard } from "./dashboard.ts";
 * import { importToken } from "../collective/tcp/auth.ts";
 *
 * const key = await importToken({ token: "a token of some length" });
 * const dashboard = serveDashboard({ hostname: "127.0.0.1", port: 0, key });
 * const page = await fetch(`http://127.0.0.1:${dashboard.port}/`);
 * assert.match(await page.text(), /<canvas/);
 * await dashboard.close();
 * ```
 */
export function serveDashboard(options: DashboardOptions): Dashboard {
  const history: DashboardEvent[] = [];
  let latestMembers: DashboardEvent | undefined;
  let stepsKept = 0;
  const sockets = new Set<WebSocket>();
  let window = { second: 0, count: 0 };
  // Members that proved the token before the run could take them.
  const waiting: { socket: WebSocket; peer: string }[] = [];
  let acceptMember: ((socket: WebSocket, peer: string) => void) | undefined;
  const server = Deno.serve({
    hostname: options.hostname,
    port: options.port,
    onListen: ({ hostname, port }) => options.onListening?.({ hostname, port }),
    onError: () => new Response("error", { status: 500 }),
  }, (request, info) => {
    const url = new URL(request.url);
    if (url.pathname === "/" && request.method === "GET") {
      return new Response(DASHBOARD_PAGE, {
        headers: {
          "content-type": "text/html; charset=utf-8",
          "content-security-policy":
            "default-src 'none'; script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval'; style-src 'unsafe-inline'; connect-src 'self'",
          "cache-control": "no-store",
        },
      });
    }
    if (url.pathname === "/member.js" && request.method === "GET" && options.memberScript) {
      return options.memberScript().then(
        (script) =>
          new Response(script, {
            headers: {
              "content-type": "text/javascript; charset=utf-8",
              "cache-control": "no-store",
            },
          }),
        (error) =>
          new Response(`the member code could not be built: ${error.message}`, { status: 500 }),
      );
    }
    const member = url.pathname === "/member";
    if (
      (url.pathname !== "/ws" && !member) || request.headers.get("upgrade") !== "websocket"
    ) {
      return new Response("not found", { status: 404 });
    }
    const second = Math.floor(performance.now() / 1000);
    if (window.second !== second) window = { second, count: 0 };
    if (++window.count > SOCKETS_PER_SECOND) {
      return new Response("too many connections", { status: 429 });
    }
    // Read before the upgrade, which closes the request.
    const address = info.remoteAddr as Deno.NetAddr;
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.binaryType = "arraybuffer"; // a binary frame's size is its byteLength
    admit(socket, member ? `${address.hostname}:${address.port}` : undefined);
    return response;
  });

  /** A socket that proved the token: a page (`peer` undefined) or a member. */
  function admit(socket: WebSocket, peer: string | undefined): void {
    const challenge = crypto.getRandomValues(new Uint8Array(32));
    const hex = [...challenge].map((b) => b.toString(16).padStart(2, "0")).join("");
    let admitted = false;
    const deadline = setTimeout(() => close(socket, 4001, "no answer to the challenge"), ANSWER_MS);
    const context = peer === undefined ? "ddp-dashboard:" : "ddp-member:";
    socket.onopen = () => socket.send(JSON.stringify({ type: "challenge", challenge: hex }));
    socket.onclose = () => {
      clearTimeout(deadline);
      sockets.delete(socket);
    };
    socket.onmessage = async (message) => {
      const size = typeof message.data === "string"
        ? new TextEncoder().encode(message.data).length
        : (message.data as ArrayBuffer).byteLength;
      if (size > MAX_FRAME_BYTES) return close(socket, 1009, "frame too large");
      if (admitted) return; // a page has nothing more to say
      const answer = typeof message.data === "string" ? parseAnswer(message.data) : undefined;
      const valid = answer !== undefined && await crypto.subtle.verify(
        "HMAC",
        options.key,
        answer,
        new TextEncoder().encode(context + hex),
      );
      clearTimeout(deadline);
      if (!valid) return close(socket, 4003, "wrong token");
      admitted = true;
      if (peer !== undefined) {
        if (!options.members) {
          return close(socket, 4004, "this run takes no members (it was not started --elastic)");
        }
        socket.onmessage = null;
        socket.onclose = null;
        if (acceptMember) acceptMember(socket, peer);
        else waiting.push({ socket, peer });
        return;
      }
      sockets.add(socket);
      const events = latestMembers ? [...history, latestMembers] : history;
      socket.send(JSON.stringify({ type: "history", events }));
    };
  }

  return {
    get port() {
      return server.addr.port;
    },
    acceptMembers(accept) {
      acceptMember = accept;
      for (const { socket, peer } of waiting.splice(0)) {
        if (socket.readyState === WebSocket.OPEN) accept(socket, peer);
      }
    },
    publish(event) {
      // Only the latest member list is kept: an elastic run sends one after every step.
      if (event.type === "members") latestMembers = event;
      else history.push(event);
      // Counted, not filtered from the history: this runs after every step.
      if (event.type === "step" && ++stepsKept > STEPS_KEPT) {
        history.splice(history.findIndex((e) => e.type === "step"), 1);
        stepsKept--;
      }
      const text = JSON.stringify(event);
      for (const socket of sockets) {
        if (socket.readyState === WebSocket.OPEN) socket.send(text);
      }
    },
    async close() {
      // Each page is told why before the server goes (at most a second's wait).
      const gone = [...sockets].map((socket) =>
        new Promise((resolve) => socket.addEventListener("close", resolve))
      );
      for (const socket of sockets) close(socket, 1001, "the run ended");
      for (const { socket } of waiting.splice(0)) close(socket, 1001, "the run ended");
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.all(gone),
        new Promise((resolve) => (timer = setTimeout(resolve, 1000))),
      ]);
      clearTimeout(timer);
      await server.shutdown();
    },
  };
}

/** The answer's MAC: 32 bytes from `{"type":"answer","mac":"<64 hex digits>"}`, else undefined. */
function parseAnswer(text: string): Uint8Array<ArrayBuffer> | undefined {
  try {
    const { type, mac } = JSON.parse(text);
    if (type !== "answer" || typeof mac !== "string" || !/^[0-9a-f]{64}$/.test(mac)) return;
    return Uint8Array.from(mac.match(/../g)!, (byte) => parseInt(byte, 16));
  } catch {
    return undefined;
  }
}

function close(socket: WebSocket, code: number, reason: string): void {
  try {
    socket.close(code, reason);
  } catch {
    // already closing
  }
}
