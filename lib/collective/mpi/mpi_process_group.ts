/**
 * The process group over the system's MPI library (Open MPI), for jobs
 * started by `mpirun` or `srun --mpi=pmix`: rank and size come from
 * `MPI_COMM_WORLD`, the bytes move through MPI's collectives (tuned for the
 * site's interconnect), and the sums are this library's own.
 *
 * An average is the direct schedule of the TCP group written as two
 * collectives that only move data — `MPI_Alltoallv` carries every process's
 * terms of block b to rank b, which adds them in global rank order into
 * float64 rounded once; `MPI_Allgatherv` carries the blocks back — because
 * MPI's own reductions add in an unspecified order. So the result equals
 * `weightedAverage` over all replicas, bit for bit, as with TCP and in one
 * process. The vector goes in pieces of {@linkcode PIECE} values, the next
 * piece's terms moving while this one's are added.
 *
 * Faults are MPI's: when a process dies, the launcher ends the job (Open
 * MPI's `mpirun` sends the others SIGTERM, then SIGKILL after
 * `odls_base_sigkill_timeout` seconds, default 1). There are no heartbeats
 * and no restarts of the group.
 *
 * @module
 */

import { decode, encode } from "npm:@msgpack/msgpack@3.1.3";
import type { Contribution } from "../all_reduce.ts";
import {
  accumulate,
  agreeOnRound,
  blockOf,
  chunkLayout,
  decodeChunk,
  encodeChunk,
  type RoundClaim,
} from "../_rank_order.ts";
import { PeerError, type ProcessGroup } from "../process_group.ts";
import { roundToBf16 } from "../../util/bf16.ts";
import { ByteBlocks, type MpiComm, type MpiWorld, mpiWorld } from "./libmpi.ts";

/** Values per piece of an average (4 MiB of float32 per replica). */
export const PIECE = 1 << 20;

/**
 * The sequences that may run at once, each on its own communicator (an
 * `exchange` tag names one): collectives on one communicator must come in
 * the same order on every rank, and the step loop's averages and a
 * checkpoint's exchanges do not wait for each other.
 */
export const MPI_TAGS: readonly string[] = [
  "",
  "average",
  "broadcast",
  "barrier",
  "epoch",
  "stop",
  "snapshot",
];

/** A piece's blocks, and the terms of this rank's block that every rank sent it. */
interface Scattered {
  blocks: { start: number; end: number; bf16Length: number }[];
  receive: ByteBlocks;
}

/** How to join an {@linkcode MpiProcessGroup}. */
export interface MpiGroupOptions {
  /** The MPI library to load (default: `DDP_MPI_LIBRARY`, else `libmpi.so.40`, …). */
  library?: string;
  /**
   * A digest of the options every process must share: processes whose
   * digests differ are refused, naming the first that differs.
   */
  digest?: string;
}

/**
 * A {@linkcode ProcessGroup} over MPI.
 *
 * @example Under `mpirun -np 2 deno run --allow-ffi …`
 * ```ts ignore
 * const group = await MpiProcessGroup.connect();
 * const average = await group.average([{ data: new Float32Array([group.rank]), weight: 1 }]);
 * console.log(`rank ${group.rank}: ${average[0]}`); // 0.5 on both
 * await group.close();
 * ```
 */
export class MpiProcessGroup implements ProcessGroup {
  readonly rank: number;
  readonly size: number;
  raised = false;
  waitingFor: string | undefined = undefined;
  /** The library, as it names itself. */
  readonly version: string;
  readonly #world: MpiWorld;
  readonly #comms: Map<string, MpiComm>;
  #seq = 0;
  #error: PeerError | null = null;

  private constructor(world: MpiWorld, comms: Map<string, MpiComm>) {
    this.#world = world;
    this.rank = world.rank;
    this.size = world.size;
    this.version = world.version;
    this.#comms = comms;
  }

  /**
   * Joins `MPI_COMM_WORLD` (initialising MPI on first use): one communicator
   * per tag, then an exchange of `digest`s. Throws a `UsageError` when no
   * usable MPI library loads, a `PeerError` when the options differ.
   */
  static async connect(options: MpiGroupOptions = {}): Promise<MpiProcessGroup> {
    const world = mpiWorld(options.library);
    const comms = new Map(MPI_TAGS.map((tag) => [tag, world.dup()]));
    const group = new MpiProcessGroup(world, comms);
    const digests = await group.exchange(options.digest ?? "", { tag: "barrier" });
    const other = digests.findIndex((digest) => digest !== digests[0]);
    if (other >= 0) {
      throw group.#fail(
        new PeerError(
          `rank ${other} was given other options than rank 0: give every process the same flags`,
        ),
      );
    }
    return group;
  }

  async average(
    parts: readonly Contribution[],
    options: { out?: Float32Array; raise?: boolean; bf16Length?: number } = {},
  ): Promise<Float32Array> {
    const seq = this.#seq++;
    const bf16Length = options.bf16Length ?? 0;
    const claim: RoundClaim = {
      length: parts[0]?.data.length ?? -1,
      weights: parts.map((p) => p.weight),
      raise: options.raise ?? false,
      bf16Length,
    };
    const everyone = await this.exchange(claim, { tag: "average" });
    const agreed = agreeOnRound(everyone, { seq });
    if (agreed.error !== undefined) throw this.#fail(new PeerError(agreed.error));
    this.raised = agreed.raised;
    const { n, total } = agreed;
    const out = options.out ?? new Float32Array(n);
    const round = { n, total, out, bf16Length, everyone, parts };
    // Piece p + 1's terms travel while piece p's are added (the calls queue in the same order
    // on every rank: alltoallv p + 1 before allgatherv p).
    let next = this.#scatter(round, 0);
    for (let start = 0; start < n; start += PIECE) {
      const scattered = await next;
      if (start + PIECE < n) next = this.#scatter(round, start + PIECE);
      await this.#reduceAndGather(round, scattered);
    }
    return out;
  }

  async broadcast(bytes: Uint8Array | undefined): Promise<Uint8Array> {
    if (this.rank === 0 && bytes === undefined) {
      throw new RangeError("rank 0 must give the bytes to broadcast");
    }
    return await this.#call("MPI_Bcast", (comm) => comm.broadcast(bytes, 0), "broadcast");
  }

  async exchange<T>(value: T, options: { tag?: string } = {}): Promise<T[]> {
    const tag = options.tag ?? "";
    const all = await this.#call(
      "MPI_Allgather",
      (comm) => comm.allgather(new Uint8Array(encode(value)), this.size),
      tag,
    );
    return all.map((bytes, r) => {
      try {
        return decode(bytes) as T;
      } catch (error) {
        throw this.#fail(
          new PeerError(`rank ${r}: malformed exchange (${(error as Error).message})`),
        );
      }
    });
  }

  async barrier(): Promise<void> {
    await this.#call("MPI_Barrier", (comm) => comm.barrier(), "barrier");
  }

  /**
   * Fails every later call. A collective under way cannot be called back: this
   * process ends, and the MPI launcher ends the others.
   */
  abort(reason: string): void {
    this.#fail(new PeerError(`rank ${this.rank} stopped: ${reason}`));
  }

  /** Nothing to close: MPI is finalised as the process ends (see `mpiWorld`). */
  close(): Promise<void> {
    return Promise.resolve();
  }

  /** Sends piece `start`'s terms of every block to its owner; resolves with what this rank got. */
  async #scatter(
    round: {
      n: number;
      bf16Length: number;
      everyone: RoundClaim[];
      parts: readonly Contribution[];
    },
    start: number,
  ): Promise<Scattered> {
    const { bf16Length, everyone, parts } = round;
    const end = Math.min(round.n, start + PIECE);
    const blocks = Array.from({ length: this.size }, (_, b) => {
      const [from, to] = blockOf(b, { n: end - start, size: this.size });
      return { start: start + from, end: start + to, bf16Length };
    });
    const vectors = parts.map((p) => p.data);
    const send = new ByteBlocks(blocks.map((b) => parts.length * chunkLayout(b).bytes));
    blocks.forEach((block, b) => encodeChunk(vectors, block, send.block(b)));
    const own = chunkLayout(blocks[this.rank]).bytes;
    const receive = new ByteBlocks(everyone.map((e) => e.weights.length * own));
    await this.#call("MPI_Alltoallv", (comm) => comm.alltoallv(send, receive));
    return { blocks, receive };
  }

  /** Adds this rank's block of a piece in rank order, then gathers every block into `out`. */
  async #reduceAndGather(
    round: { total: number; out: Float32Array; bf16Length: number; everyone: RoundClaim[] },
    scattered: Scattered,
  ): Promise<void> {
    const { total, out, bf16Length, everyone } = round;
    const { blocks, receive } = scattered;
    const own = blocks[this.rank];
    const length = own.end - own.start;
    const sums = new Float64Array(length);
    let started = false;
    everyone.forEach(({ weights }, r) => {
      const data = weights.map(() => new Float32Array(length));
      decodeChunk(receive.block(r), { ...own, into: data, at: 0 }); // sizes as agreed: it fits
      const terms = data.flatMap((values, j) =>
        weights[j] === 0 ? [] : [{ data: values, weight: weights[j] / total }]
      );
      started = accumulate(sums, { terms, start: 0, started });
    });
    out.set(sums, own.start); // rounded to float32, once
    roundToBf16(out, own.start, Math.min(own.end, Math.max(own.start, bf16Length)));
    const gathered = new ByteBlocks(blocks.map((b) => chunkLayout(b).bytes));
    await this.#call(
      "MPI_Allgatherv",
      (comm) => comm.allgatherv(encodeChunk([out], own), gathered),
    );
    blocks.forEach((block, b) => {
      if (b !== this.rank) {
        decodeChunk(gathered.block(b), { ...block, into: [out], at: block.start });
      }
    });
  }

  /** Runs a collective on `tag`'s communicator, unless the group failed; says what it waits on. */
  async #call<T>(what: string, run: (comm: MpiComm) => Promise<T>, tag = "average"): Promise<T> {
    if (this.#error) throw this.#error;
    const comm = this.#comms.get(tag);
    if (comm === undefined) throw new RangeError(`no MPI communicator for the tag "${tag}"`);
    this.waitingFor = `the other ranks (${what})`;
    try {
      return await run(comm);
    } catch (error) {
      throw this.#fail(error instanceof PeerError ? error : new PeerError(String(error)));
    } finally {
      this.waitingFor = undefined;
    }
  }

  #fail(error: PeerError): PeerError {
    if (this.#error) return this.#error;
    this.#error = error;
    this.#world.failed();
    return error;
  }
}
