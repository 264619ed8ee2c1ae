/**
 * One authenticated TCP connection to another process of the group, used as
 * a mailbox: frames are read continuously and sorted by type, so the
 * collectives can wait for the next frame of the type they expect; writes are
 * queued in order and never awaited one by one (send, receive and sum
 * overlap). Idle links send heartbeats, and a peer that sends nothing at all
 * for `silenceMs` — not even a heartbeat — is declared dead, by name.
 *
 * @module
 */

import { PeerError } from "../process_group.ts";
import { type Clock, realClock } from "../../util/clock.ts";
import { writeAll } from "./auth.ts";
import {
  encodeFrameHead,
  type Frame,
  FrameError,
  type FrameHeader,
  type FrameReader,
} from "./frame.ts";

/** What a {@linkcode Link} needs besides its connection. */
export interface LinkOptions {
  /** Names the peer in errors, e.g. `"rank 1 (10.0.0.2:41234)"`. */
  peer: string;
  /** The peer is dead once nothing arrived from it for this long. */
  silenceMs: number;
  /** Told once, when the link fails (not when it is closed). */
  onFailure: (error: PeerError) => void;
  /** Where time comes from. Default the real clock. */
  clock?: Clock;
}

/** A payload up to this size is copied behind its frame's head, to go in one write. */
const SMALL_PAYLOAD_BYTES = 4096;

/** How often an idle link says it is alive, as a share of the silence limit. */
const HEARTBEAT_SHARE = 0.2;

/**
 * A frame mailbox over an authenticated connection.
 *
 * @example
 * ```ts ignore
 * const link = new Link(conn, reader, { peer: "rank 1", silenceMs: 60_000, onFailure });
 * link.send({ type: "partial", chunk: 0 }, bytes);
 * const frame = await link.next("result");
 * ```
 */
export class Link {
  readonly peer: string;
  readonly #conn: Deno.Conn;
  readonly #reader: FrameReader;
  readonly #options: LinkOptions;
  readonly #queues = new Map<string, Frame[]>();
  readonly #waiting = new Map<string, PromiseWithResolvers<Frame>>();
  #writes: Promise<void> = Promise.resolve();
  #error: PeerError | null = null;
  #closed = false;
  /** The peer said it has finished (a `bye` frame): its end of the stream is no failure. */
  #peerFinished = false;
  readonly #clock: Clock;
  #lastHeard: number;
  #lastSent: number;
  readonly #stopTimer: () => void;

  /** Starts reading `reader` (the connection's authenticated frames) at once. */
  constructor(conn: Deno.Conn, reader: FrameReader, options: LinkOptions) {
    // Frames are written whole: no need for Nagle's delay, which stalls small frames behind
    // delayed acknowledgements.
    if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
    this.peer = options.peer;
    this.#conn = conn;
    this.#reader = reader;
    this.#options = options;
    this.#clock = options.clock ?? realClock;
    this.#lastHeard = this.#lastSent = this.#clock.now();
    const tick = Math.max(10, options.silenceMs * HEARTBEAT_SHARE);
    this.#stopTimer = this.#clock.every(tick, () => this.#watch());
    void this.#readLoop();
  }

  /** The error that broke the link, or null while it works. */
  get error(): PeerError | null {
    return this.#error;
  }

  /** Whether a frame of `type` has arrived and waits to be taken. */
  holds(type: string): boolean {
    return (this.#queues.get(type)?.length ?? 0) > 0;
  }

  /**
   * Queues a frame; it is written after every frame queued before it. A
   * large payload is written from where it lies: it must not change until
   * {@linkcode Link.flushed} resolves.
   */
  send(header: FrameHeader, payload?: Uint8Array): void {
    if (this.#error || this.#closed) return; // the failure is reported where it was seen
    const size = payload?.length ?? 0;
    const head = encodeFrameHead(header, size);
    let bytes = head;
    let rest: Uint8Array | undefined;
    if (size <= SMALL_PAYLOAD_BYTES) {
      if (size > 0) {
        bytes = new Uint8Array(head.length + size);
        bytes.set(head);
        bytes.set(payload!, head.length);
      }
    } else rest = payload;
    this.#lastSent = this.#clock.now();
    this.#writes = this.#writes.then(async () => {
      await writeAll(this.#conn, bytes);
      if (rest) await writeAll(this.#conn, rest);
    }).catch((error) => {
      this.#fail(new PeerError(`${this.peer}: cannot send (${(error as Error).message})`));
    });
  }

  /** Resolves when every queued frame has been written (or the link failed). */
  async flushed(): Promise<void> {
    await this.#writes;
  }

  /**
   * The next frame of `type`: one that arrived already (even if the link
   * failed since: a peer may close once it sent all it had to), or the next
   * to arrive; rejects once the link fails.
   */
  next(type: string): Promise<Frame> {
    const queued = this.#queues.get(type);
    if (queued && queued.length > 0) return Promise.resolve(queued.shift()!);
    if (this.#error) return Promise.reject(this.#error);
    if (this.#waiting.has(type)) throw new Error(`two readers wait for "${type}" frames`);
    const waiter = Promise.withResolvers<Frame>();
    this.#waiting.set(type, waiter);
    return waiter.promise;
  }

  /** Tells the peer this process has finished, then closes once every frame is written. */
  async finish(): Promise<void> {
    this.send({ type: "bye" });
    await Promise.race([this.#writes, new Promise((r) => setTimeout(r, 2000))]);
    this.close();
  }

  /**
   * Tells the peer why this process stops (best effort), then closes; what
   * waits on this link is rejected at once.
   */
  async abort(reason: string): Promise<void> {
    this.#rejectAll(new PeerError(`${this.peer}: link aborted (${reason})`));
    this.send({ type: "abort", reason });
    await Promise.race([this.#writes, new Promise((r) => setTimeout(r, 1000))]);
    this.close();
  }

  /** Closes the connection; pending and later `next` calls reject. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopTimer();
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    this.#rejectAll(this.#error ?? new PeerError(`${this.peer}: link closed`));
  }

  async #readLoop(): Promise<void> {
    try {
      for (;;) {
        const frame = await this.#reader.read();
        this.#lastHeard = this.#clock.now();
        if (frame === undefined) {
          if (this.#peerFinished) {
            // A clean end: what it sent stays readable; waiting for more is an error.
            this.#stopTimer();
            this.#rejectAll(new PeerError(`${this.peer} has finished and closed its connection`));
            this.#error = new PeerError(`${this.peer} has finished and closed its connection`);
          } else if (!this.#closed) {
            this.#fail(new PeerError(`${this.peer} closed its connection`));
          }
          return;
        }
        const { type } = frame.header;
        if (type === "heartbeat") continue;
        if (type === "bye") {
          this.#peerFinished = true;
          continue;
        }
        if (type === "abort") {
          this.#fail(new PeerError(`${this.peer} stopped: ${String(frame.header.reason)}`));
          return;
        }
        const waiter = this.#waiting.get(type);
        if (waiter) {
          this.#waiting.delete(type);
          waiter.resolve(frame);
        } else {
          const queue = this.#queues.get(type) ?? [];
          queue.push(frame);
          this.#queues.set(type, queue);
        }
      }
    } catch (error) {
      if (this.#closed) return;
      const reset = error instanceof Deno.errors.ConnectionReset ||
        error instanceof Deno.errors.ConnectionAborted || error instanceof Deno.errors.BrokenPipe;
      const message = error instanceof FrameError
        ? error.message
        : reset
        ? `${this.peer} closed its connection (reset)`
        : `${this.peer}: connection lost (${(error as Error).message})`;
      this.#fail(new PeerError(message));
    }
  }

  #watch(): void {
    const now = this.#clock.now();
    const silent = now - this.#lastHeard;
    if (silent > this.#options.silenceMs) {
      this.#fail(
        new PeerError(
          `${this.peer} sent nothing for ${Math.round(silent / 1000)} s: presumed dead`,
        ),
      );
      return;
    }
    if (now - this.#lastSent >= this.#options.silenceMs * HEARTBEAT_SHARE) {
      this.send({ type: "heartbeat" });
    }
  }

  #fail(error: PeerError): void {
    if (this.#error || this.#closed) return;
    this.#error = error;
    this.close();
    this.#options.onFailure(error);
  }

  #rejectAll(error: PeerError): void {
    for (const waiter of this.#waiting.values()) waiter.reject(error);
    this.#waiting.clear();
  }
}
