/**
 * A {@linkcode Channel} over a WebSocket: how members that join a served run
 * (another Deno process, a browser tab) talk to it. Runs the same in Deno and
 * in a browser (nothing but `WebSocket`, `TextEncoder` and typed arrays).
 *
 * A message travels as one binary frame: its fields as JSON, every typed
 * array in them replaced by a reference to a raw little-endian payload that
 * follows (so a gradient is its bytes, not a JSON list of numbers):
 *
 * ```
 * u32 LE   length J of the JSON
 * J bytes  the message, typed arrays as {"$a": [kind, offset, length]}
 * pad      to a multiple of 8
 * rest     payloads, each at an offset that is a multiple of 8
 * ```
 *
 * Decoding checks every reference against the frame, so a frame from an
 * untrusted peer yields a message or a `RangeError`, never an array that
 * reads past it.
 *
 * @module
 */

import type { Channel, Message } from "./channel.ts";

/** The typed arrays a message may carry, by the tag they travel under. */
const KINDS = {
  f32: Float32Array,
  f64: Float64Array,
  u8: Uint8Array,
  i32: Int32Array,
} as const;
type Kind = keyof typeof KINDS;
type Typed = InstanceType<(typeof KINDS)[Kind]>;

function kindOf(value: unknown): Kind | undefined {
  if (value instanceof Float32Array) return "f32";
  if (value instanceof Float64Array) return "f64";
  if (value instanceof Uint8Array) return "u8";
  if (value instanceof Int32Array) return "i32";
  return undefined;
}

const align8 = (n: number) => Math.ceil(n / 8) * 8;

/**
 * The bytes of `message` (see the module's format).
 *
 * @example A round trip
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeMessage, encodeMessage } from "./ws_channel.ts";
 *
 * const bytes = encodeMessage({ type: "result", id: 3, gradients: new Float32Array([1.5, -2]) });
 * const back = decodeMessage(bytes, { maxBytes: 1024 });
 * assert.deepEqual(back, { type: "result", id: 3, gradients: new Float32Array([1.5, -2]) });
 * ```
 */
export function encodeMessage(message: Message): Uint8Array<ArrayBuffer> {
  return encodeInto(message, (size) => new Uint8Array(size));
}

/**
 * {@linkcode encodeMessage} into bytes from `take(size)`: a fresh array, or
 * a channel's scratch buffer (a fresh large array costs a page fault per
 * page as it is first written: 30 ms for NiN's gradient on a measured VM).
 */
function encodeInto(
  message: Message,
  take: (size: number) => Uint8Array<ArrayBuffer>,
): Uint8Array<ArrayBuffer> {
  const arrays: Typed[] = [];
  let offset = 0;
  const json = JSON.stringify(message, (_key, value) => {
    const kind = kindOf(value);
    if (kind === undefined) return value;
    const array = value as Typed;
    arrays.push(array);
    const reference = { $a: [kind, offset, array.length] };
    offset = align8(offset + array.byteLength);
    return reference;
  });
  const head = new TextEncoder().encode(json);
  const start = align8(4 + head.length);
  const bytes = take(start + offset);
  new DataView(bytes.buffer, bytes.byteOffset).setUint32(0, head.length, true);
  bytes.set(head, 4);
  let at = start;
  for (const array of arrays) {
    bytes.set(new Uint8Array(array.buffer, array.byteOffset, array.byteLength), at);
    at = align8(at + array.byteLength);
  }
  return bytes;
}

/**
 * The message in `bytes` (from {@linkcode encodeMessage}); a `RangeError`
 * says what is wrong with a frame that is not one, or is over `maxBytes`.
 * Its arrays are views of `bytes` where aligned (several may share one
 * buffer), copies where not.
 *
 * @example A frame that points past its end is refused
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeMessage } from "./ws_channel.ts";
 *
 * const json = new TextEncoder().encode('{"type":"x","g":{"$a":["f32",0,1000]}}');
 * const bytes = new Uint8Array(8 + json.length);
 * new DataView(bytes.buffer).setUint32(0, json.length, true);
 * bytes.set(json, 4);
 * assert.throws(() => decodeMessage(bytes, { maxBytes: 1 << 20 }), /past the end/);
 * ```
 */
export function decodeMessage(bytes: Uint8Array, limits: { maxBytes: number }): Message {
  if (bytes.length > limits.maxBytes) {
    throw new RangeError(`a frame of ${bytes.length} bytes, over the limit of ${limits.maxBytes}`);
  }
  if (bytes.length < 4) throw new RangeError(`a frame of ${bytes.length} bytes`);
  const length = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
  if (4 + length > bytes.length) throw new RangeError("a frame shorter than its header");
  const start = align8(4 + length);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(4, 4 + length));
  } catch {
    throw new RangeError("a frame whose header is not UTF-8");
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text, (_key, value) => {
      if (typeof value !== "object" || value === null || !("$a" in value)) return value;
      const [kind, offset, count] = (value as { $a: unknown[] }).$a;
      const Type = KINDS[kind as Kind];
      if (Type === undefined || !Number.isSafeInteger(offset) || !Number.isSafeInteger(count)) {
        throw new RangeError(`a malformed array reference ${JSON.stringify(value)}`);
      }
      const from = start + (offset as number);
      const size = (count as number) * Type.BYTES_PER_ELEMENT;
      if ((offset as number) < 0 || (count as number) < 0 || from + size > bytes.length) {
        throw new RangeError(`an array reference past the end of its frame`);
      }
      // A view of the frame where aligned (as encodeMessage lays it out): no copy.
      if ((bytes.byteOffset + from) % Type.BYTES_PER_ELEMENT === 0) {
        return new Type(bytes.buffer as ArrayBuffer, bytes.byteOffset + from, count as number);
      }
      const copy = new Uint8Array(size);
      copy.set(bytes.subarray(from, from + size));
      return new Type(copy.buffer);
    });
  } catch (error) {
    throw error instanceof RangeError ? error : new RangeError("a frame whose header is not JSON");
  }
  const message = parsed as Message;
  if (typeof message !== "object" || message === null || typeof message.type !== "string") {
    throw new RangeError("a frame that is not a message (no type)");
  }
  return message;
}

/**
 * A {@linkcode Channel} over an open WebSocket; frames over `maxBytes` or
 * that do not decode fail the channel (`onError`), as does the socket's end.
 *
 * @example
 * ```ts ignore
 * const channel = new WebSocketChannel(socket, { maxBytes: 64 << 20, label: "member 1" });
 * channel.onMessage = (message) => console.log(message.type);
 * channel.send({ type: "hello" });
 * ```
 */
export class WebSocketChannel implements Channel {
  /** Receives every incoming message, in order. */
  onMessage: ((message: Message) => void) | null = null;
  /** Called once when the socket closes or sends what is not a message. */
  onError: ((error: Error) => void) | null = null;
  readonly #socket: WebSocket;
  #failed = false;
  /** Where messages are encoded: `send` copies the bytes (WebSocket's `send` does). */
  #scratch = new Uint8Array(0);

  /**
   * Wraps `socket`, which must be open. `options.pending`: frames it received
   * before (delivered first, once `onMessage` is set, in a microtask).
   */
  constructor(
    socket: WebSocket,
    options: { maxBytes: number; label?: string; pending?: ArrayBuffer[] },
  ) {
    this.#socket = socket;
    socket.binaryType = "arraybuffer";
    const fail = (error: Error) => {
      if (this.#failed) return;
      this.#failed = true;
      this.onError?.(error);
    };
    socket.onmessage = (event) => {
      if (this.#failed) return;
      if (!(event.data instanceof ArrayBuffer)) {
        fail(new Error("it sent a text frame, not a message"));
        return;
      }
      let message: Message;
      try {
        message = decodeMessage(new Uint8Array(event.data), options);
      } catch (error) {
        fail(new Error(`it sent ${(error as Error).message}`)); // onError closes it, saying why
        return;
      }
      this.onMessage?.(message);
    };
    for (const data of options.pending ?? []) {
      queueMicrotask(() => socket.onmessage?.(new MessageEvent("message", { data })));
    }
    socket.onclose = (event) =>
      fail(new Error(`its connection closed${event.reason ? ` (${event.reason})` : ""}`));
    socket.onerror = () => fail(new Error("its connection failed"));
  }

  /** Bytes queued in the socket, not yet sent. */
  get buffered(): number {
    return this.#socket.bufferedAmount;
  }

  /** Sends `message` as one binary frame (`transfer` is ignored: the bytes are copied). */
  send(message: Message, _transfer?: Transferable[]): void {
    if (this.#failed || this.#socket.readyState !== WebSocket.OPEN) return;
    // WebSocket's send takes a copy of the bytes at once (as the standard says), so the
    // scratch buffer can be written again for the next message.
    this.#socket.send(encodeInto(message, (size) => {
      if (this.#scratch.length < size) this.#scratch = new Uint8Array(size);
      return this.#scratch.subarray(0, size);
    }));
  }

  /** Closes the socket, telling the peer `reason` if given; no `onError` follows. */
  close(reason?: string): void {
    this.#failed = true;
    if (this.#socket.readyState > WebSocket.OPEN) return;
    if (reason === undefined) this.#socket.close();
    else this.#socket.close(1000, truncate(reason));
  }
}

/** `text` cut to the 123 bytes a close frame's reason may hold. */
function truncate(text: string): string {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length <= 123) return text;
  return new TextDecoder().decode(bytes.subarray(0, 120)).replace(/\uFFFD$/, "") + "...";
}
