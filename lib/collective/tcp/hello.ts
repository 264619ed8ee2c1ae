/**
 * The rendezvous's first words on every connection, once it is authenticated:
 * `hello` (who is calling, for what, in which job) and rank 0's `refused`,
 * and the checks rank 0 makes of a hello.
 *
 * @module
 */

import { writeAll } from "./auth.ts";
import { encodeFrame, FrameError, type FrameHeader, type FrameReader } from "./frame.ts";

/** What a connecting rank says first. */
export interface Hello {
  /** `join` (to rank 0), `ring` (to the next rank) or `mesh` (to another rank). */
  purpose: "join" | "ring" | "mesh";
  /** The caller's rank. */
  rank: number;
  /** The world size it was given. */
  size: number;
  /** The digest of its configuration. */
  digest: string;
  /** `join`: the port of its own listener, for the ring and the mesh. */
  ringPort?: number;
}

/**
 * The peer's hello, within `timeoutMs`; a `FrameError` for anything else.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeFrame, FrameReader } from "./frame.ts";
 * import { readHello } from "./hello.ts";
 *
 * const hello = { type: "hello", purpose: "ring", rank: 2, size: 3, digest: "" };
 * const reader = new FrameReader(ReadableStream.from([encodeFrame(hello)]), { peer: "x" });
 * assert.equal((await readHello(reader, "x", 1000)).rank, 2);
 * ```
 */
export async function readHello(
  reader: FrameReader,
  from: string,
  timeoutMs: number,
): Promise<Hello> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      void reader.cancel();
      reject(new FrameError(`${from}: no hello within the handshake's deadline`));
    }, timeoutMs);
  });
  try {
    const frame = await Promise.race([reader.read(), late]);
    if (frame === undefined) throw new FrameError(`${from}: closed the connection before hello`);
    const h = frame.header;
    if (
      h.type !== "hello" || !["join", "ring", "mesh"].includes(h.purpose as string) ||
      !Number.isInteger(h.rank) || !Number.isInteger(h.size) || typeof h.digest !== "string" ||
      (h.purpose === "join" && !Number.isInteger(h.ringPort))
    ) {
      throw new FrameError(`${from}: malformed hello`);
    }
    return h as unknown as Hello;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Why rank 0 refuses `hello` (and whether trying again may help), or
 * undefined if it is welcome.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { helloProblem } from "./hello.ts";
 *
 * const hello = { purpose: "join" as const, rank: 1, size: 2, digest: "a", ringPort: 1 };
 * const group = { size: 2, digest: "a", joined: [] };
 * assert.equal(helloProblem(hello, group), undefined);
 * assert.equal(helloProblem({ ...hello, digest: "b" }, group)?.retry, false);
 * ```
 */
export function helloProblem(
  hello: Hello,
  group: { size: number; digest: string; joined: readonly unknown[] },
): { reason: string; retry: boolean } | undefined {
  if (hello.size !== group.size) {
    return {
      reason: `it says the job has ${hello.size} processes, rank 0 says ${group.size}`,
      retry: false,
    };
  }
  if (hello.rank < 1 || hello.rank >= group.size) {
    return { reason: `rank ${hello.rank} is not in 1..${group.size - 1}`, retry: false };
  }
  if (hello.digest !== group.digest) {
    return {
      reason: `rank ${hello.rank} was started with another configuration than rank 0`,
      retry: false,
    };
  }
  if (hello.purpose === "ring" && hello.rank !== group.size - 1) {
    return { reason: `rank ${hello.rank} has no ring connection to rank 0`, retry: false };
  }
  if (hello.purpose === "join" && group.joined[hello.rank] !== undefined) {
    // Its earlier connection may be closing (a restarted process): once it is, the place is free.
    return {
      reason: `rank ${hello.rank} has already joined (two processes were given the same rank?)`,
      retry: true,
    };
  }
  return undefined;
}

/**
 * Writes one frame to `conn` directly (before a `Link` reads it).
 *
 * @example
 * ```ts ignore
 * await sendRaw(conn, { type: "hello", purpose: "join", rank: 1, size: 2, digest: "" });
 * ```
 */
export async function sendRaw(conn: Deno.Conn, header: FrameHeader): Promise<void> {
  await writeAll(conn, encodeFrame(header));
}

/** Tells a refused caller why (once authenticated), then closes its connection. */
export async function refuseAndClose(
  conn: Deno.Conn,
  refusal: { reason: string; retry: boolean },
  reader?: FrameReader,
) {
  try {
    if (reader) await sendRaw(conn, { type: "refused", ...refusal });
  } catch { /* the peer is gone */ }
  try {
    conn.close();
  } catch { /* already closed */ }
}
