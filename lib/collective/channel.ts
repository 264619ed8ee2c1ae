/**
 * Message channels: the one transport abstraction the rest of the library
 * talks through.
 *
 * A {@linkcode Channel} is an ordered, reliable, bidirectional link that
 * carries {@linkcode Message} objects and can move `ArrayBuffer`s without
 * copying them. {@linkcode PostMessageChannel} implements it over anything with
 * `postMessage` (a `MessagePort`, such as a worker thread's `parentPort`);
 * `WorkerThread` (worker_thread.ts) implements it over a thread it starts;
 * a TCP transport between hosts implements the same interface by framing and
 * encoding the messages.
 *
 * @module
 */

import { trace } from "../util/trace.ts";

/** A message: a `type` tag plus fields that depend on the type. */
export interface Message {
  /** Discriminates the message kinds of a protocol. */
  type: string;
  /** Payload fields. */
  [field: string]: unknown;
}

/** An ordered, reliable, bidirectional message link between two endpoints. */
export interface Channel {
  /**
   * Sends `message`. Buffers listed in `transfer` are moved to the other side
   * without copying and become detached (unusable) here.
   */
  send(message: Message, transfer?: Transferable[]): void;
  /** Receives every incoming message, in order. */
  onMessage: ((message: Message) => void) | null;
  /** Called when the link or the peer fails; no messages follow. */
  onError: ((error: Error) => void) | null;
  /** Closes the link. */
  close(): void;
}

/** What {@linkcode PostMessageChannel} needs from a `MessagePort`. */
export interface PostMessageEndpoint {
  /** Posts a message, transferring the listed buffers. */
  postMessage(message: unknown, transfer: Transferable[]): void;
  /** Incoming messages. */
  onmessage: ((event: MessageEvent) => void) | null;
  /** A message that could not be deserialised. */
  onmessageerror?: ((event: MessageEvent) => void) | null;
}

/**
 * A {@linkcode Channel} over `postMessage`.
 *
 * @example Two ends of a `MessageChannel`
 * ```ts
 * import assert from "node:assert/strict";
 * import { PostMessageChannel } from "./channel.ts";
 *
 * const { port1, port2 } = new MessageChannel();
 * const a = new PostMessageChannel(port1, { close: () => port1.close() });
 * const b = new PostMessageChannel(port2, { close: () => port2.close() });
 * const received = new Promise((resolve) => (b.onMessage = resolve));
 * const data = new Float32Array(1024);
 * a.send({ type: "data", data }, [data.buffer]); // moved, not copied
 * assert.equal(data.length, 0);
 * assert.equal(((await received) as { data: Float32Array }).data.length, 1024);
 * a.close();
 * b.close();
 * ```
 */
export class PostMessageChannel implements Channel {
  /** Receives every incoming message, in order. */
  onMessage: ((message: Message) => void) | null = null;
  /** Called when the peer fails. */
  onError: ((error: Error) => void) | null = null;
  readonly #endpoint: PostMessageEndpoint;
  readonly #close: () => void;
  readonly #label: string;

  /**
   * Wraps `endpoint`. `options.close` is what {@linkcode PostMessageChannel.close}
   * does besides detaching the handlers (e.g. `port.close()`).
   * `options.label` names the channel in `DDP_TRACE` output.
   */
  constructor(
    endpoint: PostMessageEndpoint,
    options: { close?: () => void; label?: string } = {},
  ) {
    this.#endpoint = endpoint;
    this.#close = options.close ?? (() => {});
    this.#label = options.label ?? "channel";
    endpoint.onmessage = (event) => {
      trace(this.#label, `received ${(event.data as Message)?.type}`);
      this.onMessage?.(event.data as Message);
    };
    endpoint.onmessageerror = () =>
      this.onError?.(new Error("received a message that could not be decoded"));
  }

  /** Posts `message`, moving the buffers in `transfer`. */
  send(message: Message, transfer: Transferable[] = []): void {
    trace(this.#label, `sent ${message.type}`);
    this.#endpoint.postMessage(message, transfer);
  }

  /** Detaches the handlers and runs the `close` option. */
  close(): void {
    this.#endpoint.onmessage = null;
    this.#endpoint.onmessageerror = null;
    this.#close();
  }
}
