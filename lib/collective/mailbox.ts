/**
 * Receiving messages by type from a {@linkcode Channel}.
 *
 * @module
 */

import type { Channel, Message } from "./channel.ts";

/**
 * Sorts the messages arriving on a channel by their `type`, so that code can
 * `await` the next message of the type it expects while other types are
 * handled elsewhere. Once the channel fails (or {@linkcode Mailbox.fail} is
 * called), every pending and later `receive` rejects with that error, so no
 * caller waits forever for a peer that is gone.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Mailbox } from "./mailbox.ts";
 * import { PostMessageChannel } from "./channel.ts";
 *
 * const { port1, port2 } = new MessageChannel();
 * const a = new Mailbox(new PostMessageChannel(port1));
 * const b = new Mailbox(new PostMessageChannel(port2));
 * b.send({ type: "hello", from: "b" });
 * const message = await a.receive("hello");
 * assert.ok(message.from === "b");
 * a.close();
 * b.close();
 * ```
 */
export class Mailbox {
  readonly #channel: Channel;
  readonly #queue: Message[] = [];
  readonly #waiting: Waiter[] = [];
  readonly #handlers = new Map<string, (message: Message) => void>();
  readonly #onError: ((error: Error) => void) | undefined;
  #error: Error | null = null;

  /**
   * Takes over `channel`'s `onMessage` and `onError`. `options.onError` is
   * told when the channel itself fails (the peer crashed or went away).
   */
  constructor(channel: Channel, options: { onError?: (error: Error) => void } = {}) {
    this.#channel = channel;
    this.#onError = options.onError;
    channel.onMessage = (message) => this.#deliver(message);
    channel.onError = (error) => {
      this.#onError?.(error); // may fail this mailbox with a more specific error first
      this.fail(error);
    };
  }

  /** The error that broke the mailbox, or null while it works. */
  get error(): Error | null {
    return this.#error;
  }

  /**
   * Resolves with the earliest message whose type is `type` (or one of the
   * listed types), which may already have arrived.
   */
  receive<T extends Message = Message>(type: string | readonly string[]): Promise<T> {
    if (this.#error) return Promise.reject(this.#error);
    const types = typeof type === "string" ? [type] : type;
    const index = this.#queue.findIndex((message) => types.includes(message.type));
    if (index >= 0) return Promise.resolve(this.#queue.splice(index, 1)[0] as T);
    return new Promise<Message>((resolve, reject) => {
      this.#waiting.push({ types, resolve, reject });
    }) as Promise<T>;
  }

  /** Hands every message of `type` to `handler` instead of queueing it. */
  handle<T extends Message = Message>(type: string, handler: (message: T) => void): void {
    this.#handlers.set(type, handler as (message: Message) => void);
  }

  /** Sends on the underlying channel. */
  send(message: Message, transfer?: Transferable[]): void {
    this.#channel.send(message, transfer);
  }

  /** Rejects every pending and future `receive` with `error` (the first error wins). */
  fail(error: Error): void {
    if (this.#error) return;
    this.#error = error;
    for (const { reject } of this.#waiting.splice(0)) reject(error);
  }

  /** Closes the channel; pending receives reject. */
  close(): void {
    this.fail(new Error("mailbox closed"));
    this.#channel.close();
  }

  #deliver(message: Message): void {
    if (this.#error) return;
    const handler = this.#handlers.get(message.type);
    if (handler) {
      try {
        handler(message);
      } catch (error) {
        this.fail(error instanceof Error ? error : new Error(String(error)));
      }
      return;
    }
    const index = this.#waiting.findIndex((waiter) => waiter.types.includes(message.type));
    if (index >= 0) {
      this.#waiting.splice(index, 1)[0].resolve(message);
      return;
    }
    this.#queue.push(message);
  }
}

interface Waiter {
  types: readonly string[];
  resolve(message: Message): void;
  reject(error: Error): void;
}
