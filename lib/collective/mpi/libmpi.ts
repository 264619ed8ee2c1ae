/**
 * The system's MPI library through Deno's FFI: found by name, initialised
 * once per process with `MPI_THREAD_MULTIPLE`, and wrapped in the few
 * collectives the MPI process group uses. Open MPI only (4.x tested): its
 * handles (`MPI_COMM_WORLD`, `MPI_BYTE`, …) are the addresses of symbols
 * such as `ompi_mpi_comm_world`, which libc's `dlsym` gives; MPICH's are
 * integer constants and its ABI is not bound here.
 *
 * Every collective is declared `nonblocking`: it runs on a thread of Deno's
 * blocking pool while the event loop goes on (heartbeats, signals, the
 * workers' messages). Collectives on one communicator must be called in the
 * same order on every rank, so each {@linkcode MpiComm} runs its calls one
 * after the other; different communicators may run at once.
 *
 * Linux only (libc is `libc.so.6`).
 *
 * @module
 */

import { UsageError } from "../../errors.ts";

/** The libraries tried, in order, when none is named. */
export const MPI_LIBRARY_NAMES: readonly string[] = [
  "libmpi.so.40", // Open MPI 3.x-5.x
  "libmpi.so.12", // MPICH (refused, by name, once loaded)
  "libmpi.so",
];

/** The environment variable that names the MPI library to load. */
export const MPI_LIBRARY_VARIABLE = "DDP_MPI_LIBRARY";

const RTLD_NOW = 2;
const RTLD_GLOBAL = 0x100;
const MPI_THREAD_MULTIPLE = 3;
const MPI_MAX_LIBRARY_VERSION_STRING = 256;

const LIBC_SYMBOLS = {
  dlopen: { parameters: ["buffer", "i32"], result: "pointer" },
  dlsym: { parameters: ["pointer", "buffer"], result: "pointer" },
  dlerror: { parameters: [], result: "pointer" },
} as const;

const MPI_SYMBOLS = {
  MPI_Initialized: { parameters: ["buffer"], result: "i32" },
  MPI_Init_thread: { parameters: ["pointer", "pointer", "i32", "buffer"], result: "i32" },
  MPI_Comm_rank: { parameters: ["pointer", "buffer"], result: "i32" },
  MPI_Comm_size: { parameters: ["pointer", "buffer"], result: "i32" },
  MPI_Comm_dup: { parameters: ["pointer", "buffer"], result: "i32" },
  MPI_Get_library_version: { parameters: ["buffer", "buffer"], result: "i32" },
  MPI_Finalize: { parameters: [], result: "i32" },
  MPI_Barrier: { parameters: ["pointer"], result: "i32", nonblocking: true },
  MPI_Bcast: {
    parameters: ["buffer", "i32", "pointer", "i32", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Allgather: {
    parameters: ["buffer", "i32", "pointer", "buffer", "i32", "pointer", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Allgatherv: {
    parameters: ["buffer", "i32", "pointer", "buffer", "buffer", "buffer", "pointer", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Alltoallv: {
    parameters: [
      "buffer",
      "buffer",
      "buffer",
      "pointer",
      "buffer",
      "buffer",
      "buffer",
      "pointer",
      "pointer",
    ],
    result: "i32",
    nonblocking: true,
  },
} as const;

type MpiLibrary = Deno.DynamicLibrary<typeof MPI_SYMBOLS>;

/** The largest byte count one MPI call takes (its counts are C `int`s). */
export const MPI_MAX_COUNT = 2 ** 31 - 1;

/**
 * The MPI world this process belongs to: its rank and size in
 * `MPI_COMM_WORLD`, the library's name and version, and communicators to run
 * collectives on.
 */
export interface MpiWorld {
  /** This process's rank in `MPI_COMM_WORLD`. */
  readonly rank: number;
  /** The number of processes in `MPI_COMM_WORLD`. */
  readonly size: number;
  /** The library, as it names itself (e.g. `"Open MPI v4.1.4, …"`), first line. */
  readonly version: string;
  /** The file loaded (e.g. `"libmpi.so.40"`). */
  readonly library: string;
  /** A new communicator over the same processes (`MPI_Comm_dup`; collective: same order everywhere). */
  dup(): MpiComm;
  /**
   * Keeps this process from calling `MPI_Finalize` as it ends: a group
   * failed, and a rank that finalises while another still waits in a
   * collective would wait too. (It finalises when it ends with status 0 and
   * nothing failed.)
   */
  failed(): void;
}

let world: MpiWorld | undefined;

/**
 * The MPI world, initialised on first use (`MPI_Init_thread` with
 * `MPI_THREAD_MULTIPLE`). `library` (or `DDP_MPI_LIBRARY`) names the file
 * to load; else `libmpi.so.40` (Open MPI), `libmpi.so.12`, `libmpi.so`.
 * Throws a `UsageError` with one line when no library loads, when it is not
 * Open MPI, when FFI is not permitted, or when the library cannot give
 * `MPI_THREAD_MULTIPLE`.
 *
 * @example
 * ```ts ignore
 * const world = mpiWorld();
 * console.log(`rank ${world.rank} of ${world.size} (${world.version})`);
 * ```
 */
export function mpiWorld(library?: string): MpiWorld {
  if (world) return world;
  const named = library ?? readLibraryVariable();
  const candidates = named ? [named] : MPI_LIBRARY_NAMES;
  let libc: Deno.DynamicLibrary<typeof LIBC_SYMBOLS>;
  try {
    libc = Deno.dlopen("libc.so.6", LIBC_SYMBOLS);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
      throw new UsageError(
        "the mpi process group loads the MPI library through FFI: run deno with --allow-ffi",
      );
    }
    throw new UsageError(
      `the mpi process group needs libc.so.6 (Linux): ${(error as Error).message}`,
    );
  }
  // Loaded global first, so that Open MPI's plugins, which it loads itself, find its symbols.
  let handle: Deno.PointerValue = null;
  let loaded = "";
  const failures: string[] = [];
  for (const name of candidates) {
    handle = libc.symbols.dlopen(cString(name), RTLD_NOW | RTLD_GLOBAL);
    if (handle !== null) {
      loaded = name;
      break;
    }
    failures.push(readCString(libc.symbols.dlerror()) ?? `${name}: not found`);
  }
  if (handle === null) {
    throw new UsageError(
      `the mpi process group needs Open MPI's library: ${
        named ? `${MPI_LIBRARY_VARIABLE}=${named} does not load` : "none of " +
          candidates.join(", ") + " loads"
      } (${failures[0]}); install Open MPI (e.g. apt-get install openmpi-bin)` +
        (named ? "" : ` or name the library in ${MPI_LIBRARY_VARIABLE}`),
    );
  }
  const handles = {
    comm: libc.symbols.dlsym(handle, cString("ompi_mpi_comm_world")),
    byte: libc.symbols.dlsym(handle, cString("ompi_mpi_byte")),
    int: libc.symbols.dlsym(handle, cString("ompi_mpi_int")),
  };
  if (handles.comm === null || handles.byte === null || handles.int === null) {
    throw new UsageError(
      `${loaded} is not Open MPI (it has no ompi_mpi_comm_world): the mpi process group supports Open MPI only`,
    );
  }
  const mpi = Deno.dlopen(loaded, MPI_SYMBOLS);
  const flag = new Int32Array(1);
  check(mpi.symbols.MPI_Initialized(flag), "MPI_Initialized");
  const provided = new Int32Array(1);
  if (flag[0] === 0) {
    check(
      mpi.symbols.MPI_Init_thread(null, null, MPI_THREAD_MULTIPLE, provided),
      "MPI_Init_thread",
    );
    if (provided[0] < MPI_THREAD_MULTIPLE) {
      throw new UsageError(
        `${loaded} grants thread level ${
          provided[0]
        }, not MPI_THREAD_MULTIPLE (3), which the mpi process group needs`,
      );
    }
  }
  const rank = new Int32Array(1);
  const size = new Int32Array(1);
  check(mpi.symbols.MPI_Comm_rank(handles.comm, rank), "MPI_Comm_rank");
  check(mpi.symbols.MPI_Comm_size(handles.comm, size), "MPI_Comm_size");
  const versionBytes = new Uint8Array(MPI_MAX_LIBRARY_VERSION_STRING);
  const versionLength = new Int32Array(1);
  check(
    mpi.symbols.MPI_Get_library_version(versionBytes, versionLength),
    "MPI_Get_library_version",
  );
  const version = new TextDecoder().decode(versionBytes.subarray(0, versionLength[0]))
    .split(/[\n,]/)[0].replace(/\0.*$/, "").trim();
  let clean = true;
  globalThis.addEventListener("unload", () => {
    if (clean && (Deno.exitCode ?? 0) === 0) mpi.symbols.MPI_Finalize();
  });
  const created: MpiWorld = {
    rank: rank[0],
    size: size[0],
    version,
    library: loaded,
    dup() {
      const out = new BigUint64Array(1);
      check(mpi.symbols.MPI_Comm_dup(handles.comm, out), "MPI_Comm_dup");
      return new MpiComm(mpi, Deno.UnsafePointer.create(out[0]), handles);
    },
    failed() {
      clean = false;
    },
  };
  world = created;
  return created;
}

/**
 * One MPI communicator: collectives over bytes, run one after the other (the
 * order every rank calls them in).
 */
export class MpiComm {
  readonly #mpi: MpiLibrary;
  readonly #comm: Deno.PointerValue;
  readonly #types: { byte: Deno.PointerValue; int: Deno.PointerValue };
  #queue: Promise<unknown> = Promise.resolve();

  /** Wraps `comm` of the loaded `mpi`; see {@linkcode MpiWorld.dup}. */
  constructor(
    mpi: MpiLibrary,
    comm: Deno.PointerValue,
    types: { byte: Deno.PointerValue; int: Deno.PointerValue },
  ) {
    this.#mpi = mpi;
    this.#comm = comm;
    this.#types = types;
  }

  /** Resolves once every rank has called it. */
  barrier(): Promise<void> {
    return this.#run("MPI_Barrier", () => this.#mpi.symbols.MPI_Barrier(this.#comm));
  }

  /** Every rank's `bytes`, in rank order (lengths may differ). */
  async allgather(bytes: Uint8Array, size: number): Promise<Uint8Array[]> {
    const { int } = this.#types;
    const lengths = new Int32Array(size);
    await this.#run("MPI_Allgather", () =>
      this.#mpi.symbols.MPI_Allgather(
        new Int32Array([countOf(bytes.length)]),
        1,
        int,
        lengths,
        1,
        int,
        this.#comm,
      ));
    const all = new ByteBlocks(lengths);
    await this.allgatherv(bytes, all);
    return [...lengths].map((_, r) => all.block(r));
  }

  /** Rank `root`'s bytes on every rank (the others' `bytes` are ignored). */
  async broadcast(bytes: Uint8Array | undefined, root: number): Promise<Uint8Array> {
    const { byte, int } = this.#types;
    const length = new Int32Array([countOf(bytes?.length ?? 0)]);
    await this.#run(
      "MPI_Bcast",
      () => this.#mpi.symbols.MPI_Bcast(length, 1, int, root, this.#comm),
    );
    const out = bytes ?? new Uint8Array(length[0]);
    await this.#run(
      "MPI_Bcast",
      () => this.#mpi.symbols.MPI_Bcast(out, length[0], byte, root, this.#comm),
    );
    return out;
  }

  /**
   * All-to-all of byte blocks: rank r receives block r of every rank's
   * `send`, rank q's into block q of `receive`.
   */
  alltoallv(send: ByteBlocks, receive: ByteBlocks): Promise<void> {
    const { byte } = this.#types;
    return this.#run("MPI_Alltoallv", () =>
      this.#mpi.symbols.MPI_Alltoallv(
        send.bytes,
        send.counts,
        send.at,
        byte,
        receive.bytes,
        receive.counts,
        receive.at,
        byte,
        this.#comm,
      ));
  }

  /** Every rank's `send` into its block of `receive` (rank q's into block q), on every rank. */
  allgatherv(send: Uint8Array, receive: ByteBlocks): Promise<void> {
    const { byte } = this.#types;
    return this.#run("MPI_Allgatherv", () =>
      this.#mpi.symbols.MPI_Allgatherv(
        send,
        send.length,
        byte,
        receive.bytes,
        receive.counts,
        receive.at,
        byte,
        this.#comm,
      ));
  }

  /** Runs `call` after every earlier call on this communicator; checks its return code. */
  #run(name: string, call: () => Promise<number>): Promise<void> {
    const next = this.#queue.then(call).then((code) => check(code, name));
    this.#queue = next.catch(() => {});
    return next;
  }
}

/**
 * Blocks of `counts[i]` bytes laid end to end in one buffer, as MPI's
 * v-collectives take them (counts and offsets checked to fit a C `int`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ByteBlocks } from "./libmpi.ts";
 *
 * const blocks = new ByteBlocks([3, 0, 2]);
 * assert.deepEqual([...blocks.at], [0, 3, 3]);
 * assert.equal(blocks.bytes.length, 5);
 * assert.equal(blocks.block(2).byteOffset, 3);
 * ```
 */
export class ByteBlocks {
  /** Each block's size in bytes. */
  readonly counts: Int32Array;
  /** Each block's offset in {@linkcode ByteBlocks.bytes}. */
  readonly at: Int32Array;
  /** The buffer. */
  readonly bytes: Uint8Array<ArrayBuffer>;

  /** Blocks of the sizes `counts`, zeroed. */
  constructor(counts: ArrayLike<number>) {
    this.counts = Int32Array.from(counts, countOf);
    this.at = new Int32Array(this.counts.length);
    let at = 0;
    this.counts.forEach((count, i) => {
      this.at[i] = countOf(at);
      at += count;
    });
    this.bytes = new Uint8Array(countOf(at));
  }

  /** Block `i`, a view of the buffer. */
  block(i: number): Uint8Array<ArrayBuffer> {
    return this.bytes.subarray(this.at[i], this.at[i] + this.counts[i]);
  }
}

/** `count`, checked to fit one MPI call. */
function countOf(count: number): number {
  if (count > MPI_MAX_COUNT) {
    throw new RangeError(`${count} bytes is more than one MPI call carries (${MPI_MAX_COUNT})`);
  }
  return count;
}

function check(code: number, name: string): void {
  if (code !== 0) throw new Error(`${name} failed with MPI error ${code}`);
}

function cString(text: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`${text}\0`);
}

function readCString(pointer: Deno.PointerValue): string | undefined {
  return pointer === null ? undefined : new Deno.UnsafePointerView(pointer).getCString();
}

function readLibraryVariable(): string | undefined {
  try {
    return Deno.env.get(MPI_LIBRARY_VARIABLE) || undefined;
  } catch {
    return undefined; // without --allow-env: the default names
  }
}
