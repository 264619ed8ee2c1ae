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
 * A reader never allocates more than the frame's declared length (and up to
 * 7 bytes to align its payload), after checking it against the limit; a stream that ends inside a frame, a header
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
  /**
   * Hands the frame's memory back to its reader for a later frame; after it
   * the payload must not be read. Optional: a frame never released is
   * collected as garbage.
   */
  release?: () => void;
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
  const head = encodeFrameHead(header, payload.length);
  const bytes = new Uint8Array(head.length + payload.length);
  bytes.set(head);
  bytes.set(payload, head.length);
  return bytes;
}

/**
 * The bytes of a frame up to its payload (length prefix, header length and
 * header), for a payload of `payloadBytes` written after them: a large
 * payload is written from where it lies, not copied into the frame.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeFrame, encodeFrameHead } from "./frame.ts";
 *
 * const payload = new Uint8Array([1, 2, 3]);
 * const head = encodeFrameHead({ type: "chunk" }, payload.length);
 * assert.deepEqual([...head, ...payload], [...encodeFrame({ type: "chunk" }, payload)]);
 * ```
 */
export function encodeFrameHead(header: FrameHeader, payloadBytes: number): Uint8Array {
  const head = encode({ ...header, v: PROTOCOL_VERSION });
  if (head.length > 0xffff) throw new RangeError(`frame header of ${head.length} bytes`);
  const bytes = new Uint8Array(6 + head.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, 2 + head.length + payloadBytes);
  view.setUint16(4, head.length);
  bytes.set(head, 6);
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
 * What a {@linkcode FrameReader} reads from: a connection (`Deno.Conn` is
 * one), read into the reader's own memory.
 */
export interface ByteSource {
  /** Reads up to `into.length` bytes into `into`; null at the end of the stream. */
  read(into: Uint8Array): Promise<number | null>;
}

/** Bytes read ahead of the frame being read (a frame's start, small frames whole). */
const STAGING_BYTES = 1 << 16;
/** Bytes of released frame memory a reader keeps for its next frames. */
const POOL_BYTES = 1 << 25;

/**
 * Reads frames from a connection (or any byte stream), one at a time, within
 * `maxFrameBytes`. A frame's payload starts 8-byte aligned, so it can be
 * viewed as float32 or float64 values in place, and large payloads are read
 * straight into it (one copy, from the socket). Released frames
 * ({@linkcode Frame.release}) lend their memory to the next ones: the reader
 * then touches no fresh memory per frame, which costs more than the copy
 * where page faults are slow.
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
  readonly #source: ByteSource & { cancel?: () => Promise<void> };
  readonly #peer: string;
  readonly #staging = new Uint8Array(STAGING_BYTES);
  /** Unread bytes are `#staging[#head, #tail)`. */
  #head = 0;
  #tail = 0;
  #ended = false;
  /** Released frames' memory, by size. */
  readonly #pool = new Map<number, ArrayBuffer[]>();
  #pooledBytes = 0;

  /**
   * A reader of `source` (a connection, read directly; or a stream, as in
   * tests); errors name `options.peer`.
   */
  constructor(
    source: ByteSource | ReadableStream<Uint8Array>,
    options: { peer: string; maxFrameBytes?: number },
  ) {
    this.#source = source instanceof ReadableStream ? new StreamSource(source) : source;
    this.#peer = options.peer;
    this.maxFrameBytes = options.maxFrameBytes;
  }

  /** The next frame, or undefined when the stream ended cleanly between frames. */
  async read(): Promise<Frame | undefined> {
    if (!(await this.#buffer(4))) return undefined;
    const staged = new DataView(this.#staging.buffer);
    const length = staged.getUint32(this.#head);
    const max = this.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    if (length < 2 || length > max) {
      throw new FrameError(
        `${this.#peer}: frame of ${length} bytes, outside 2..${max}: not this protocol, or corrupt`,
      );
    }
    this.#head += 4;
    if (!(await this.#buffer(2))) {
      throw new FrameError(`${this.#peer}: connection closed inside a frame (truncated)`);
    }
    const headLength = staged.getUint16(this.#head);
    if (2 + headLength > length) {
      throw new FrameError(`${this.#peer}: frame header longer than its frame (malformed)`);
    }
    // Placed so that the payload, after the header length and the header, is 8-byte aligned.
    const pad = (8 - ((2 + headLength) % 8)) % 8;
    const memory = this.#take(pad + length);
    const body = new Uint8Array(memory, pad, length);
    await this.#fill(body);
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
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#give(memory);
    };
    return { header: fields as FrameHeader, payload: body.subarray(2 + headLength), release };
  }

  /**
   * Stops reading: a stream is cancelled, so that a pending read ends; a
   * connection's pending read ends when the connection is closed.
   */
  async cancel(): Promise<void> {
    await this.#source.cancel?.().catch(() => {});
  }

  /**
   * Whether `n` bytes are staged, reading more if needed: false if the stream
   * ended before any; throws if it ended after some.
   */
  async #buffer(n: number): Promise<boolean> {
    if (this.#tail - this.#head >= n) return true;
    this.#staging.copyWithin(0, this.#head, this.#tail);
    this.#tail -= this.#head;
    this.#head = 0;
    while (this.#tail < n && !this.#ended) {
      const read = await this.#source.read(this.#staging.subarray(this.#tail));
      if (read === null) this.#ended = true;
      else this.#tail += read;
    }
    if (this.#tail >= n) return true;
    if (this.#tail === 0) return false;
    throw new FrameError(`${this.#peer}: connection closed inside a frame (truncated)`);
  }

  /** Fills `body` with the staged bytes, then straight from the source. */
  async #fill(body: Uint8Array): Promise<void> {
    const staged = Math.min(body.length, this.#tail - this.#head);
    body.set(this.#staging.subarray(this.#head, this.#head + staged));
    this.#head += staged;
    let filled = staged;
    while (filled < body.length) {
      const rest = body.length - filled;
      // A small rest goes through the staging buffer, reading ahead what follows it.
      if (rest < STAGING_BYTES / 4) {
        if (!(await this.#buffer(rest))) break;
        body.set(this.#staging.subarray(this.#head, this.#head + rest), filled);
        this.#head += rest;
        filled += rest;
        continue;
      }
      const read = this.#ended ? null : await this.#source.read(body.subarray(filled));
      if (read === null) {
        this.#ended = true;
        break;
      }
      filled += read;
    }
    if (filled < body.length) {
      throw new FrameError(`${this.#peer}: connection closed inside a frame (truncated)`);
    }
  }

  /** `bytes` of memory: a released frame's of that size, or new. */
  #take(bytes: number): ArrayBuffer {
    const free = this.#pool.get(bytes);
    const memory = free?.pop();
    if (memory === undefined) return new ArrayBuffer(bytes);
    this.#pooledBytes -= bytes;
    return memory;
  }

  #give(memory: ArrayBuffer): void {
    if (this.#pooledBytes + memory.byteLength > POOL_BYTES) return; // left to the collector
    const free = this.#pool.get(memory.byteLength) ?? [];
    free.push(memory);
    this.#pool.set(memory.byteLength, free);
    this.#pooledBytes += memory.byteLength;
  }
}

/** A stream read as a {@linkcode ByteSource}. */
class StreamSource implements ByteSource {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #left: Uint8Array = new Uint8Array(0);

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  async read(into: Uint8Array): Promise<number | null> {
    while (this.#left.length === 0) {
      const { value, done } = await this.#reader.read();
      if (done) return null;
      this.#left = value;
    }
    const n = Math.min(into.length, this.#left.length);
    into.set(this.#left.subarray(0, n));
    this.#left = this.#left.subarray(n);
    return n;
  }

  cancel(): Promise<void> {
    return this.#reader.cancel();
  }
}
