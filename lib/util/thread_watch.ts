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
 * On Linux the threads are watched in `/proc/self/task` (Deno names a
 * worker's threads `worker-N`). Deno reads `/proc/self` only under
 * `--allow-all`; with `--allow-ffi` (which `deno task train` has) the
 * directory is read through libc instead, as Deno's permissions do not
 * reach foreign calls. Otherwise a fixed grace period of 500 ms stands in;
 * the teardown itself took about 16 ms on an idle machine. That grace is not
 * always enough: one `scripts/train.ts` run without either permission
 * crashed at exit (SIGSEGV) while the test suite ran two files at a time on
 * 2 cores (2026-12-06).
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
 * then picks out the worker threads started since (or those of the workers
 * given to {@linkcode ThreadWatch.add}), and
 * {@linkcode ThreadWatch.exited} waits for those to end.
 *
 * @example
 * ```ts ignore
 * import { Worker } from "node:worker_threads";
 * import { ThreadWatch } from "./thread_watch.ts";
 *
 * const threads = new ThreadWatch();
 * const worker = new Worker(new URL("./some_worker.ts", import.meta.url));
 * threads.add(worker); // this worker's thread only
 * // ... use the worker ...
 * threads.mark();
 * worker.terminate();
 * await threads.exited(); // now the process may exit safely
 * ```
 */
export class ThreadWatch {
  /** How to list the threads, and those there were at construction; null where they cannot be seen. */
  readonly #seen: { list: ThreadLister; before: Set<string> } | null;
  readonly #marked = new Set<string>();
  /** The `threadId`s of the workers this watch is for, when given. */
  readonly #workers = new Set<number>();

  /** Takes note of the threads running now. */
  constructor() {
    const list = threadLister();
    this.#seen = list === null ? null : { list, before: new Set(list().keys()) };
  }

  /**
   * Whether threads can be observed here: on Linux, with `--allow-all` or
   * `--allow-ffi`.
   */
  get observable(): boolean {
    return this.#seen !== null;
  }

  /**
   * Names a worker this watch is for, by its `threadId` (Deno names the
   * worker's thread `worker-<threadId>`): {@linkcode ThreadWatch.mark} then
   * picks out these workers' threads only, and not those that other code in
   * the process started meanwhile (another run, or another test file under
   * `deno test --parallel`, whose threads may outlive this one's).
   */
  add(worker: { threadId: number }): void {
    this.#workers.add(worker.threadId);
  }

  /**
   * Adds the threads of the workers given to {@linkcode ThreadWatch.add} —
   * or, if none were given or one of them is not found under its name, every
   * worker thread started since construction — to those
   * {@linkcode ThreadWatch.exited} waits for. Call it before terminating.
   */
  mark(): void {
    if (this.#seen === null) return;
    const { list, before } = this.#seen;
    const started = [...list()].filter(([id, name]) => !before.has(id) && WORKER_THREAD.test(name));
    const names = new Set([...this.#workers].map((threadId) => `worker-${threadId}`));
    // A worker's own threads (llvmpipe's, for one) carry its name too: a name, many threads.
    const named = started.filter(([, name]) => names.has(name));
    const found = new Set(named.map(([, name]) => name));
    const chosen = names.size > 0 && found.size === names.size ? named : started;
    for (const [id] of chosen) this.#marked.add(id);
  }

  /**
   * Resolves `true` once every marked thread has exited, `false` if some are
   * still running after `options.timeoutMs` (default 10 s). Where threads
   * cannot be observed it waits a short fixed time and resolves `true`.
   */
  async exited(options: { timeoutMs?: number } = {}): Promise<boolean> {
    if (this.#seen === null) {
      await sleep(GRACE_MS);
      return true;
    }
    const deadline = performance.now() + (options.timeoutMs ?? 10_000);
    for (;;) {
      const running = this.#seen.list();
      for (const id of this.#marked) if (!running.has(id)) this.#marked.delete(id);
      if (this.#marked.size === 0) return true;
      if (performance.now() > deadline) return false;
      await sleep(POLL_MS);
    }
  }
}

/** Thread id → thread name; a thread that ends while being read is left out. */
type ThreadLister = () => Map<string, string>;

/** How this process's threads can be listed here, if at all. */
function threadLister(): ThreadLister | null {
  if (Deno.build.os !== "linux") return null;
  if (readableByDeno()) return listWithDeno;
  libcLister ??= listWithLibc();
  return libcLister;
}

/** The libc listing, once made (`null`: not possible here). */
let libcLister: ThreadLister | null | undefined;

function readableByDeno(): boolean {
  try {
    return Deno.permissions.querySync({ name: "read", path: TASKS }).state === "granted" &&
      Deno.statSync(TASKS).isDirectory;
  } catch {
    return false;
  }
}

function listWithDeno(): Map<string, string> {
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

const LIBC_SYMBOLS = {
  opendir: { parameters: ["buffer"], result: "pointer" },
  readdir: { parameters: ["pointer"], result: "pointer" },
  closedir: { parameters: ["pointer"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
} as const;

/** Where `d_name` starts in glibc's and musl's `struct dirent` on 64-bit Linux. */
const D_NAME_OFFSET = 19;

/** The same listing through libc, where `--allow-ffi` is granted (64-bit Linux). */
function listWithLibc(): ThreadLister | null {
  let libc: Deno.DynamicLibrary<typeof LIBC_SYMBOLS>;
  try {
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return null;
    if (Deno.build.arch !== "x86_64" && Deno.build.arch !== "aarch64") return null;
    libc = Deno.dlopen("libc.so.6", LIBC_SYMBOLS); // opened once, for the process
  } catch {
    return null;
  }
  const { opendir, readdir, closedir, open, read, close } = libc.symbols;
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const cString = (text: string) => encoder.encode(`${text}\0`);
  const buffer = new Uint8Array(64);
  const readComm = (id: string): string | undefined => {
    const fd = open(cString(`${TASKS}/${id}/comm`), 0); // O_RDONLY
    if (fd < 0) return undefined; // the thread exited between listing and reading
    try {
      const n = Number(read(fd, buffer, BigInt(buffer.length)));
      return n < 0 ? undefined : decoder.decode(buffer.subarray(0, n)).trim();
    } finally {
      close(fd);
    }
  };
  const list = (): Map<string, string> => {
    const threads = new Map<string, string>();
    const dir = opendir(cString(TASKS));
    if (dir === null) return threads;
    try {
      for (let entry = readdir(dir); entry !== null; entry = readdir(dir)) {
        const id = new Deno.UnsafePointerView(entry).getCString(D_NAME_OFFSET);
        if (!/^\d+$/.test(id)) continue; // "." and ".."
        const name = readComm(id);
        if (name !== undefined) threads.set(id, name);
      }
    } finally {
      closedir(dir);
    }
    return threads;
  };
  try {
    return list().has(`${Deno.pid}`) ? list : null; // the main thread's id is the process's
  } catch {
    return null;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
