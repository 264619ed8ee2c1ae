/**
 * The threads the library starts (replica workers, the all-reduce benchmark's
 * workers, the WebGPU path probe), and the channel between such a thread and
 * the one that started it.
 *
 * They are `node:worker_threads` workers, not Web Workers. In Deno (2.9),
 * neither kind's `terminate()` interrupts a thread that spins in a
 * synchronous loop (an open Deno bug), but a Web Worker that did not stop
 * keeps the whole process from exiting until it is killed, whereas a
 * terminated `node:worker_threads` worker no longer holds the process: the
 * process ends once its own work is done, and the stuck thread with it
 * (`tests/train_test.ts`, a replica in `for (;;) {}`). A thread started
 * here sees Deno's APIs and WebGPU as a Web Worker does; it talks through
 * `parentPort` (see {@linkcode parentChannel}) instead of `self`.
 *
 * @module
 */

import { parentPort, Worker as NodeWorker } from "node:worker_threads";
import { trace } from "../util/trace.ts";
import {
  type Channel,
  type Message,
  PostMessageChannel,
  type PostMessageEndpoint,
} from "./channel.ts";

/** The message type that carries a worker's uncaught error to its parent. */
const UNCAUGHT = "workerThread:uncaught";

/**
 * A worker thread running `url`'s module, and the {@linkcode Channel} to it.
 *
 * An uncaught error in the thread (reported by {@linkcode parentChannel}), a
 * module that cannot be loaded, or a thread that ends before it is closed
 * reaches `onError`. {@linkcode WorkerThread.close} terminates the thread.
 *
 * @example Starting a thread and talking to it
 * ```ts ignore
 * import { WorkerThread } from "./worker_thread.ts";
 *
 * const thread = new WorkerThread(new URL("./echo_worker.ts", import.meta.url), { name: "echo" });
 * thread.onMessage = (message) => console.log("got", message.type);
 * thread.onError = (error) => console.error("the thread failed:", error.message);
 * const data = new Float32Array(1024);
 * thread.send({ type: "data", data }, [data.buffer]); // moved, not copied
 * // ... later:
 * thread.close();
 * ```
 */
export class WorkerThread implements Channel {
  /** Receives every message the thread posts, in order. */
  onMessage: ((message: Message) => void) | null = null;
  /** Called when the thread fails or ends before it is closed. */
  onError: ((error: Error) => void) | null = null;
  readonly #worker: NodeWorker;
  readonly #label: string;
  #closed = false;

  /**
   * Starts `url`'s module in a new thread named `options.name`.
   * `options.label` names the channel in `DDP_TRACE` output (default: the name).
   */
  constructor(url: URL | string, options: { name: string; label?: string }) {
    this.#label = options.label ?? options.name;
    this.#worker = new NodeWorker(url, { name: options.name });
    this.#worker.on("message", (message: Message) => {
      if (this.#closed) return;
      trace(this.#label, `received ${message?.type}`);
      if (message?.type === UNCAUGHT) this.onError?.(new Error(String(message.message)));
      else this.onMessage?.(message);
    });
    this.#worker.on("messageerror", () => {
      if (!this.#closed) this.onError?.(new Error("received a message that could not be decoded"));
    });
    this.#worker.on("error", (error: unknown) => {
      if (!this.#closed) this.onError?.(error instanceof Error ? error : new Error(String(error)));
    });
    this.#worker.on("exit", (code: number) => {
      if (!this.#closed) this.onError?.(new Error(`its thread ended (exit code ${code})`));
    });
  }

  /** The worker's `threadId`, unique in the process (see `ThreadWatch.add`). */
  get threadId(): number {
    return this.#worker.threadId;
  }

  /** Posts `message` to the thread, moving the buffers in `transfer`. */
  send(message: Message, transfer: Transferable[] = []): void {
    trace(this.#label, `sent ${message.type}`);
    // deno-lint-ignore no-explicit-any -- node's typing of the transfer list is narrower
    this.#worker.postMessage(message, transfer as any);
  }

  /** Terminates the thread; nothing reaches `onMessage` or `onError` afterwards. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#worker.terminate().catch(() => {}); // it ends either way; nothing to report
  }
}

/**
 * In a thread started by {@linkcode WorkerThread}: the channel to the thread
 * that started it. From then on, an uncaught error or unhandled rejection in
 * this thread is not printed but sent to the parent, whose `onError` gets its
 * message.
 *
 * @example The whole of a worker entry point
 * ```ts ignore
 * import { parentChannel } from "../lib/collective/worker_thread.ts";
 * import { serveReplica } from "../lib/train/worker/replica_service.ts";
 *
 * await serveReplica(parentChannel());
 * ```
 */
export function parentChannel(options: { label?: string } = {}): Channel {
  if (parentPort === null) {
    throw new Error("parentChannel() works only in a thread started by WorkerThread");
  }
  const port = parentPort;
  const report = (event: Event, error: unknown) => {
    event.preventDefault();
    const message = error instanceof Error ? error.message : String(error);
    port.postMessage({ type: UNCAUGHT, message });
  };
  globalThis.addEventListener("error", (event) => report(event, event.error ?? event.message));
  globalThis.addEventListener("unhandledrejection", (event) => report(event, event.reason));
  // parentPort has postMessage(message, transfer) and onmessage, as PostMessageChannel needs.
  return new PostMessageChannel(port as unknown as PostMessageEndpoint, { label: options.label });
}
