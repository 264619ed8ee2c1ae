/**
 * The wire format between processes: length-prefixed frames, each a small
 * MessagePack header and an optional raw payload (float32 gradients as their
 * little-endian bytes, no per-element encoding).
 *
 * ```
 * u32 BE   length of everything after it (≤ maxFrameBytes)
 * u16 BE   header length H
 * H bytes  header: a MessagePack map with at least { v: PROTOCOL_VERSION, type: string }
 * rest     payload bytes
 * ```
 *
 * A reader never allocates more than the frame's declared length, after
 * checking it against the limit; a stream that ends inside a frame, a header
 * that is not a MessagePack map with this protocol version and a string type,
 * and an oversize length are each a {@linkcode FrameError} naming the peer.
 *
 * @module
 */

import { decode, encode } from "npm:@msgpack/msgpack@3.1.3";

/** The protocol version every header carries; a peer with another is refused. */
export const PROTOCOL_VERSION = 1;

/** The default largest frame: 1 GiB, room for a 250-million-weight gradient chunk. */
export const DEFAULT_MAX_FRAME_BYTES = 2 ** 30;

/** A frame's header: a type and whatever small fields it carries. */
export interface FrameHeader {
  /** What the frame is (e.g. `hello`, `chunk`). */
  type: string;
  [field: string]: unknown;
}

/** A decoded frame. */
export interface Frame {
  /** Its header, `v` removed. */
  header: FrameHeader;
  /** Its payload (empty when it has none). */
  payload: Uint8Array;
}

/** A peer sent something that is not a frame of this protocol. */
export class FrameError extends Error {
  /** Creates the error; `message` names the peer and the problem. */
  constructor(message: string) {
    super(message);
    this.name = "FrameError";
  }
}

/**
 * The bytes of one frame.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeFrame } from "./frame.ts";
 *
 * const bytes = encodeFrame({ type: "chunk", index: 3 }, new Uint8Array(8));
 * assert.equal(new DataView(bytes.buffer).getUint32(0), bytes.length - 4);
 * ```
 */
export function encodeFrame(
  header: FrameHeader,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const head = encode({ ...header, v: PROTOCOL_VERSION });
  if (head.length > 0xffff) throw new RangeError(`frame header of ${head.length} bytes`);
  const bytes = new Uint8Array(6 + head.length + payload.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, 2 + head.length + payload.length);
  view.setUint16(4, head.length);
  bytes.set(head, 6);
  bytes.set(payload, 6 + head.length);
  return bytes;
}

/**
 * The bytes of a float32 array, little-endian as in memory on every platform
 * Deno runs on; no copy.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { float32Bytes } from "./frame.ts";
 *
 * assert.deepEqual([...float32Bytes(new Float32Array([1]))], [0, 0, 128, 63]);
 * ```
 */
export function float32Bytes(values: Float32Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

/**
 * Reads frames from a byte stream (a TCP connection's `readable`), one at a
 * time, within `maxFrameBytes`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeFrame, FrameReader } from "./frame.ts";
 *
 * const bytes = encodeFrame({ type: "hello", rank: 1 });
 * const reader = new FrameReader(ReadableStream.from([bytes]), { peer: "rank 1" });
 * const frame = await reader.read();
 * assert.deepEqual(frame?.header, { type: "hello", rank: 1 });
 * assert.equal(await reader.read(), undefined); // the stream ended between frames
 * ```
 */
export class FrameReader {
  /** The largest frame accepted; undefined for {@linkcode DEFAULT_MAX_FRAME_BYTES}. */
  maxFrameBytes: number | undefined;
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #peer: string;
  #buffered: Uint8Array[] = [];
  #bufferedBytes = 0;
  #ended = false;

  /** A reader of `stream`; errors name `options.peer`. */
  constructor(
    stream: ReadableStream<Uint8Array>,
    options: { peer: string; maxFrameBytes?: number },
  ) {
    this.#reader = stream.getReader();
    this.#peer = options.peer;
    this.maxFrameBytes = options.maxFrameBytes;
  }

  /** The next frame, or undefined when the stream ended cleanly between frames. */
  async read(): Promise<Frame | undefined> {
    const prefix = await this.#take(4);
    if (prefix === undefined) return undefined;
    const length = new DataView(prefix.buffer, prefix.byteOffset, 4).getUint32(0);
    const max = this.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    if (length < 2 || length > max) {
      throw new FrameError(
        `${this.#peer}: frame of ${length} bytes, outside 2..${max}: not this protocol, or corrupt`,
      );
    }
    const body = await this.#take(length);
    if (body === undefined) {
      throw new FrameError(`${this.#peer}: connection closed inside a frame (truncated)`);
    }
    const headLength = new DataView(body.buffer, body.byteOffset, 2).getUint16(0);
    if (2 + headLength > length) {
      throw new FrameError(`${this.#peer}: frame header longer than its frame (malformed)`);
    }
    let header: unknown;
    try {
      header = decode(body.subarray(2, 2 + headLength));
    } catch (error) {
      throw new FrameError(`${this.#peer}: malformed frame header (${(error as Error).message})`);
    }
    if (typeof header !== "object" || header === null || Array.isArray(header)) {
      throw new FrameError(`${this.#peer}: malformed frame header (not a map)`);
    }
    const { v, ...fields } = header as Record<string, unknown>;
    if (v !== PROTOCOL_VERSION) {
      throw new FrameError(
        `${this.#peer}: protocol version ${
          JSON.stringify(v)
        }, but this process speaks ${PROTOCOL_VERSION}`,
      );
    }
    if (typeof fields.type !== "string") {
      throw new FrameError(`${this.#peer}: malformed frame header (no type)`);
    }
    return { header: fields as FrameHeader, payload: body.subarray(2 + headLength) };
  }

  /** Stops reading (the stream is cancelled). */
  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
  }

  /** Exactly `n` bytes, or undefined if the stream ends before the first; throws if it ends inside. */
  async #take(n: number): Promise<Uint8Array | undefined> {
    while (this.#bufferedBytes < n && !this.#ended) {
      const { value, done } = await this.#reader.read();
      if (done) this.#ended = true;
      else if (value.length > 0) {
        this.#buffered.push(value);
        this.#bufferedBytes += value.length;
      }
    }
    if (this.#bufferedBytes < n) {
      if (this.#bufferedBytes === 0) return undefined;
      throw new FrameError(`${this.#peer}: connection closed inside a frame (truncated)`);
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#buffered[0];
      const used = Math.min(chunk.length, n - filled);
      out.set(chunk.subarray(0, used), filled);
      filled += used;
      if (used === chunk.length) this.#buffered.shift();
      else this.#buffered[0] = chunk.subarray(used);
    }
    this.#bufferedBytes -= n;
    return out;
  }
}
