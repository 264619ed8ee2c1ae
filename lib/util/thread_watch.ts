/**
 * Waiting until terminated workers' threads have really exited.
 *
 * A worker's `terminate()` returns at once (Web Workers and
 * `node:worker_threads` workers alike); the worker's thread then tears down
 * its runtime, its WebGPU device and, with it, the graphics driver's state.
 * If the process exits during that teardown, the driver's exit handlers run
 * concurrently with it. With Mesa's software drivers this crashed the process
 * at exit (SIGSEGV, or a glibc heap-corruption abort): in 12 of 20 runs of a
 * minimal case on the GL driver, and in 7 of 48 `scripts/train.ts` runs with
 * three trainings at once on 2 cores, each after training had finished.
 * Waiting for the threads first made it 0 of 40 and 0 of 60 (both ways below).
 *
 * On Linux, under `--allow-all`, the threads are watched in `/proc/self/task`
 * (Deno names a worker's threads `worker-N`; it reads `/proc/self` only with
 * `--allow-all`). Otherwise a fixed grace period of 500 ms stands in; the
 * teardown itself took about 16 ms on an idle machine.
 *
 * @module
 */

const TASKS = "/proc/self/task";
const WORKER_THREAD = /^worker-\d+$/;
const POLL_MS = 10;
/** How long to wait where the threads cannot be observed. */
const GRACE_MS = 500;

/**
 * Remembers the threads that exist when it is made; {@linkcode ThreadWatch.mark}
 * then picks out the worker threads started since, and
 * {@linkcode ThreadWatch.exited} waits for those to end.
 *
 * @example
 * ```ts ignore
 * import { ThreadWatch } from "./thread_watch.ts";
 *
 * const threads = new ThreadWatch();
 * const worker = new Worker(new URL("./some_worker.ts", import.meta.url), { type: "module" });
 * // ... use the worker ...
 * threads.mark();
 * worker.terminate();
 * await threads.exited(); // now the process may exit safely
 * ```
 */
export class ThreadWatch {
  readonly #before: Set<string> | null;
  readonly #marked = new Set<string>();

  /** Takes note of the threads running now. */
  constructor() {
    this.#before = readable() ? new Set(listThreads().keys()) : null;
  }

  /** Whether threads can be observed here (Linux with read access to `/proc/self/task`). */
  get observable(): boolean {
    return this.#before !== null;
  }

  /**
   * Adds the worker threads started since construction to those
   * {@linkcode ThreadWatch.exited} waits for. Call it before terminating.
   */
  mark(): void {
    if (this.#before === null) return;
    for (const [id, name] of listThreads()) {
      if (!this.#before.has(id) && WORKER_THREAD.test(name)) this.#marked.add(id);
    }
  }

  /**
   * Resolves `true` once every marked thread has exited, `false` if some are
   * still running after `options.timeoutMs` (default 10 s). Where threads
   * cannot be observed it waits a short fixed time and resolves `true`.
   */
  async exited(options: { timeoutMs?: number } = {}): Promise<boolean> {
    if (this.#before === null) {
      await sleep(GRACE_MS);
      return true;
    }
    const deadline = performance.now() + (options.timeoutMs ?? 10_000);
    for (;;) {
      const running = listThreads();
      for (const id of this.#marked) if (!running.has(id)) this.#marked.delete(id);
      if (this.#marked.size === 0) return true;
      if (performance.now() > deadline) return false;
      await sleep(POLL_MS);
    }
  }
}

function readable(): boolean {
  if (Deno.build.os !== "linux") return false;
  try {
    return Deno.permissions.querySync({ name: "read", path: TASKS }).state === "granted" &&
      Deno.statSync(TASKS).isDirectory;
  } catch {
    return false;
  }
}

/** Thread id → thread name. A thread that ends while being read is left out. */
function listThreads(): Map<string, string> {
  const threads = new Map<string, string>();
  for (const entry of Deno.readDirSync(TASKS)) {
    try {
      threads.set(entry.name, Deno.readTextFileSync(`${TASKS}/${entry.name}/comm`).trim());
    } catch {
      // the thread exited between listing and reading
    }
  }
  return threads;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
