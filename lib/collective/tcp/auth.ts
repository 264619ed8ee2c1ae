/**
 * Mutual authentication of a TCP connection between two training processes
 * with a shared secret, before anything else is read from it: an HMAC-SHA256
 * challenge–response in both directions. The secret never crosses the wire;
 * fresh nonces on both sides make a recorded exchange useless.
 *
 * ```
 * acceptor  → connector   challenge  { nonce: 32 random bytes }
 * connector → acceptor    response   { nonce: 32 random bytes, mac: HMAC(secret, "ddp-connector" ‖ nonceA ‖ nonceC) }
 * acceptor  → connector   accepted   { mac: HMAC(secret, "ddp-acceptor" ‖ nonceC ‖ nonceA) }   or   refused { reason }
 * ```
 *
 * Until a connection has proved the secret, frames larger than
 * {@linkcode HANDSHAKE_MAX_FRAME_BYTES} are refused, and the handshake must
 * finish within a timeout.
 *
 * @module
 */

import { encodeFrame, type Frame, FrameError, FrameReader } from "./frame.ts";

/** The largest frame read from a peer that has not yet proved the secret. */
export const HANDSHAKE_MAX_FRAME_BYTES = 1024;

/** A peer did not prove the shared secret, or refused ours. */
export class AuthError extends Error {
  /** Creates the error; `message` names the peer and the reason. */
  constructor(message: string) {
    super(message);
    this.name = "AuthError";
  }
}

/**
 * The shared secret as an HMAC key: `DDP_TOKEN`'s value, or the contents of
 * `options.file` (trailing newline removed). Throws an `AuthError` when
 * neither gives a token of at least 16 characters.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { importToken } from "./auth.ts";
 *
 * const key = await importToken({ token: "correct horse battery staple" });
 * assert.equal(key.algorithm.name, "HMAC");
 * await assert.rejects(importToken({ token: "short" }), /at least 16 characters/);
 * ```
 */
export async function importToken(options: { token?: string; file?: string }): Promise<CryptoKey> {
  let token = options.token;
  if (token === undefined && options.file !== undefined) {
    try {
      token = (await Deno.readTextFile(options.file)).replace(/\r?\n$/, "");
    } catch (error) {
      throw new AuthError(`token file ${options.file}: ${(error as Error).message}`);
    }
  }
  if (token === undefined || token.length < 16) {
    throw new AuthError(
      "a shared token of at least 16 characters is needed (DDP_TOKEN or a token file)",
    );
  }
  return await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(token),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
}

/** What both sides of the handshake need. */
export interface HandshakeOptions {
  /** The shared secret ({@linkcode importToken}). */
  key: CryptoKey;
  /** Names the peer in errors, e.g. `"127.0.0.1:41234"`. */
  peer: string;
  /** The whole handshake must finish within this. Default 10 s. */
  timeoutMs?: number;
}

/**
 * The accepting side: challenges the peer on `conn` and verifies its answer
 * before reading anything else; resolves with a reader for the frames that
 * follow. On a wrong answer it tells the peer, closes nothing itself (the
 * caller closes `conn`) and throws an `AuthError`.
 *
 * @example
 * ```ts ignore
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 29500 });
 * const conn = await listener.accept();
 * const frames = await acceptAuthenticated(conn, { key, peer: "rank 1" });
 * ```
 */
export async function acceptAuthenticated(
  conn: Deno.Conn,
  options: HandshakeOptions,
): Promise<FrameReader> {
  const reader = handshakeReader(conn, options.peer);
  return await withTimeout(options, reader, async () => {
    const mine = crypto.getRandomValues(new Uint8Array(32));
    await writeAll(conn, encodeFrame({ type: "challenge", nonce: mine }));
    const response = await expect(reader, "response", options.peer);
    const theirs = bytesField(response, "nonce", options.peer);
    const mac = bytesField(response, "mac", options.peer);
    const ok = await crypto.subtle.verify(
      "HMAC",
      options.key,
      mac,
      concat(LABEL_CONNECTOR, mine, theirs),
    );
    if (!ok) {
      await writeAll(conn, encodeFrame({ type: "refused", reason: "wrong token" })).catch(() => {});
      throw new AuthError(`${options.peer}: wrong token; connection refused`);
    }
    const proof = await sign(options.key, concat(LABEL_ACCEPTOR, theirs, mine));
    await writeAll(conn, encodeFrame({ type: "accepted", mac: proof }));
    return reader;
  });
}

/**
 * The connecting side: answers the peer's challenge on `conn` and verifies
 * the peer's proof in turn; resolves with a reader for the frames that
 * follow, or throws an `AuthError` (refused, or the peer does not know the
 * secret either).
 *
 * @example
 * ```ts ignore
 * const conn = await Deno.connect({ hostname: "10.0.0.1", port: 29500 });
 * const frames = await connectAuthenticated(conn, { key, peer: "rank 0 at 10.0.0.1:29500" });
 * ```
 */
export async function connectAuthenticated(
  conn: Deno.Conn,
  options: HandshakeOptions,
): Promise<FrameReader> {
  const reader = handshakeReader(conn, options.peer);
  return await withTimeout(options, reader, async () => {
    const challenge = await expect(reader, "challenge", options.peer);
    const theirs = bytesField(challenge, "nonce", options.peer);
    const mine = crypto.getRandomValues(new Uint8Array(32));
    const mac = await sign(options.key, concat(LABEL_CONNECTOR, theirs, mine));
    await writeAll(conn, encodeFrame({ type: "response", nonce: mine, mac }));
    const answer = await reader.read();
    if (answer?.header.type === "refused") {
      throw new AuthError(
        `${options.peer} refused the connection: ${String(answer.header.reason)}`,
      );
    }
    if (answer?.header.type !== "accepted") {
      throw new AuthError(`${options.peer}: no answer to the handshake`);
    }
    const proof = bytesField(answer, "mac", options.peer);
    const ok = await crypto.subtle.verify(
      "HMAC",
      options.key,
      proof,
      concat(LABEL_ACCEPTOR, mine, theirs),
    );
    if (!ok) throw new AuthError(`${options.peer} does not know the token`);
    return reader;
  });
}

const LABEL_CONNECTOR = new TextEncoder().encode("ddp-connector");
const LABEL_ACCEPTOR = new TextEncoder().encode("ddp-acceptor");

function handshakeReader(conn: Deno.Conn, peer: string): FrameReader {
  return new FrameReader(conn, { peer, maxFrameBytes: HANDSHAKE_MAX_FRAME_BYTES });
}

/** Runs `step`; past the timeout, cancels `reader` (so a pending read ends) and throws. */
async function withTimeout<T>(
  options: HandshakeOptions,
  reader: FrameReader,
  step: () => Promise<T>,
): Promise<T> {
  const ms = options.timeoutMs ?? 10_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      void reader.cancel();
      reject(new AuthError(`${options.peer}: no handshake within ${ms / 1000} s`));
    }, ms);
  });
  try {
    const result = await Promise.race([step(), timedOut]);
    reader.maxFrameBytes = undefined; // proved: the normal limit from now on
    return result;
  } catch (error) {
    if (error instanceof FrameError) {
      throw new AuthError(`${error.message} (during the handshake)`);
    }
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

async function expect(reader: FrameReader, type: string, peer: string): Promise<Frame> {
  const frame = await reader.read();
  if (frame === undefined) {
    throw new AuthError(`${peer}: closed the connection during the handshake`);
  }
  if (frame.header.type !== type) {
    throw new AuthError(
      `${peer}: sent "${frame.header.type}" where the handshake expects "${type}"`,
    );
  }
  return frame;
}

function bytesField(frame: Frame, name: string, peer: string): Uint8Array<ArrayBuffer> {
  const value = frame.header[name];
  if (!(value instanceof Uint8Array) || value.length !== 32) {
    throw new AuthError(`${peer}: malformed handshake (${name})`);
  }
  return new Uint8Array(value);
}

async function sign(key: CryptoKey, data: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, data));
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * Writes all of `bytes` to `conn`.
 *
 * @example
 * ```ts ignore
 * await writeAll(conn, encodeFrame({ type: "hello" }));
 * ```
 */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}
