/**
 * All-reduce benchmark: the time of one weighted-average all-reduce of a
 * vector among W workers, for each algorithm, next to a memory-copy baseline
 * measured the same way.
 *
 * Figures follow nccl-tests: for a vector of `bytes`, algorithm bandwidth is
 * `bytes / time` and bus bandwidth is `algbw × 2(W−1)/W`. The `copy`
 * baseline has every worker copy its vector into shared memory and back,
 * the least traffic any all-reduce among workers of one process has to
 * cause, so `time / copy time` says how close an algorithm gets to what the
 * memory can do.
 *
 * @module
 */

import type { AllReduce } from "../collective/all_reduce.ts";
import type { AllReduceAlgorithm } from "../collective/registry.ts";
import type { Channel, Message } from "../collective/channel.ts";
import { WorkerThread } from "../collective/worker_thread.ts";
import { Mailbox } from "../collective/mailbox.ts";
import {
  abortSharedAllReduce,
  createSharedAllReduceBuffer,
  createSharedAllReduceMemory,
  SharedAllReduce,
  type SharedAllReduceBuffer,
} from "../collective/shared_all_reduce.ts";
import { StarAllReduce, StarAllReduceHub } from "../collective/star_all_reduce.ts";
import { importToken } from "../collective/tcp/auth.ts";
import { TcpProcessGroup } from "../collective/tcp/tcp_process_group.ts";
import { BARRIER_BYTES, SharedBarrier } from "../collective/_barrier.ts";
import { WorkerError } from "../errors.ts";
import { summarize, type Summary } from "./stats.ts";
import { lines } from "../util/lines.ts";

/**
 * What the all-reduce benchmark measures: an algorithm, the `copy` baseline,
 * `move` (the shared all-reduce's data movement between the workers, without
 * its arithmetic), `shared-scalar` (the shared all-reduce with the scalar sum instead of the
 * SIMD one, to compare) or `tcp-chain` (the TCP group with its chain average
 * forced, to compare). `mpi` starts `mpirun` (Open MPI), one process per
 * worker.
 */
export type AllReduceBenchKind =
  | AllReduceAlgorithm
  | "copy"
  | "move"
  | "shared-scalar"
  | "tcp-chain";

/** Options for {@linkcode benchAllReduce}. */
export interface AllReduceBenchOptions {
  /**
   * What to measure. Default `["copy", "shared", "star"]`; `tcp` runs each
   * worker as a process of a TCP process group over loopback (one replica
   * each: the wire path alone).
   */
  kinds?: readonly AllReduceBenchKind[];
  /** Worker counts. Default `[2, 4]`. */
  worldSizes?: readonly number[];
  /** Vector sizes in float32 elements. */
  lengths: readonly number[];
  /** Timed repetitions per configuration (after one untimed warm-up). Default 5. */
  repeats?: number;
  /** Operations per repetition: enough to fill about this many bytes per worker. Default 64 MiB. */
  bytesPerRepeat?: number;
  /** Called after each configuration. */
  onResult?: (result: AllReduceBenchResult) => void;
}

/** One configuration's result. */
export interface AllReduceBenchResult {
  /** Algorithm or `copy`. */
  kind: AllReduceBenchKind;
  /** Number of workers. */
  worldSize: number;
  /** Vector length in float32 elements. */
  length: number;
  /** Vector size in bytes. */
  bytes: number;
  /** Operations per timed repetition. */
  opsPerRepeat: number;
  /** Milliseconds per operation over the repetitions. */
  ms: Summary;
  /** Algorithm bandwidth at the median, GB/s (10⁹ bytes). */
  algbwGBps: number;
  /** Bus bandwidth at the median, GB/s. */
  busbwGBps: number;
}

/** The library's own worker module for this benchmark. */
const WORKER_URL = new URL("../../workers/all_reduce_bench_worker.ts", import.meta.url);

/**
 * Measures every `kind` × `worldSize` × `length` combination, each with its
 * own fresh workers. For one size and worker count, the kinds' repetitions
 * take turns (copy, shared, star, copy, …), so that a machine that speeds up
 * or slows down during the run moves every kind's figures alike and their
 * ratios stay fair; `mpi` comes after them, alone (its idle ranks poll).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { benchAllReduce } from "./all_reduce_bench.ts";
 *
 * const results = await benchAllReduce({ worldSizes: [2], lengths: [1024], repeats: 2 });
 * assert.equal(results.length, 3); // copy, shared, star
 * assert.ok(results.every((r) => r.ms.median > 0 && r.busbwGBps === r.algbwGBps)); // W = 2
 * ```
 */
export async function benchAllReduce(
  options: AllReduceBenchOptions,
): Promise<AllReduceBenchResult[]> {
  const kinds = options.kinds ?? ["copy", "shared", "star"];
  const worldSizes = options.worldSizes ?? [2, 4];
  const repeats = options.repeats ?? 5;
  const bytesPerRepeat = options.bytesPerRepeat ?? 64 * 2 ** 20;
  const results: AllReduceBenchResult[] = [];
  for (const length of options.lengths) {
    for (const worldSize of worldSizes) {
      const bytes = 4 * length;
      const ops = Math.max(1, Math.min(500, Math.round(bytesPerRepeat / bytes)));
      // Open MPI's ranks poll while they wait for the next command, taking a core: `mpi` is
      // measured on its own, after the others, which take turns.
      const rounds = [kinds.filter((k) => k !== "mpi"), kinds.filter((k) => k === "mpi")];
      for (const round of rounds.filter((r) => r.length > 0)) {
        const times = await timeInTurns(round, { worldSize, length, ops, repeats });
        for (const [k, kind] of round.entries()) {
          const ms = summarize(times[k].map((t) => t / ops));
          const algbwGBps = bytes / (ms.median * 1e6);
          const result: AllReduceBenchResult = {
            kind,
            worldSize,
            length,
            bytes,
            opsPerRepeat: ops,
            ms,
            algbwGBps,
            busbwGBps: (algbwGBps * 2 * (worldSize - 1)) / worldSize,
          };
          results.push(result);
          options.onResult?.(result);
        }
      }
    }
  }
  return results;
}

/**
 * Starts a group for each of `kinds`, warms each up once, then times
 * `repeats` repetitions of `ops` operations, the kinds taking turns; the
 * milliseconds of each repetition, by kind.
 */
async function timeInTurns(
  kinds: readonly AllReduceBenchKind[],
  config: { worldSize: number; length: number; ops: number; repeats: number },
): Promise<number[][]> {
  const groups: BenchGroup[] = [];
  try {
    for (const kind of kinds) {
      const group = await startGroup({ kind, ...config });
      groups.push(group);
      await group.repeat(); // warm-up, untimed
    }
    const times = kinds.map(() => [] as number[]);
    for (let repeat = 0; repeat < config.repeats; repeat++) {
      for (const [k, group] of groups.entries()) times[k].push(await group.repeat());
    }
    return times;
  } finally {
    await Promise.all(groups.map((group) => group.close()));
  }
}

/** One configuration's workers, set up and waiting to be told to go. */
export interface BenchGroup {
  /** Runs one repetition of `ops` operations; resolves with its duration in ms (the slowest worker's). */
  repeat(): Promise<number>;
  /** Terminates the workers (resolves once they are gone). */
  close(): void | Promise<void>;
}

/** Starts one configuration's workers and waits until they are ready. */
async function startGroup(
  config: { kind: AllReduceBenchKind; worldSize: number; length: number; ops: number },
): Promise<BenchGroup> {
  const { kind, worldSize, length, ops } = config;
  if (kind === "mpi") return await startMpiGroup(config);
  const overTcp = kind === "tcp" || kind === "tcp-chain";
  // The copy baseline and `shared-scalar` over a plain SharedArrayBuffer; `shared` over the
  // shared WebAssembly memory the trainer uses (its sums in SIMD).
  const buffer = kind === "star" || overTcp
    ? undefined
    : kind === "shared"
    ? createSharedAllReduceMemory({ worldSize, length })
    : kind === "move"
    ? new SharedArrayBuffer(BARRIER_BYTES + 4 * length * (worldSize + 1)) // vectors, result
    : createSharedAllReduceBuffer({ worldSize, length });
  const tcp = overTcp
    ? { port: freeLoopbackPort(), token: crypto.randomUUID() } // a token for this run only
    : undefined;
  const mailboxes: Mailbox[] = [];
  let failure: Error | undefined;
  const fail = (error: Error) => {
    failure ??= error;
    if (buffer) abortSharedAllReduce(buffer);
    mailboxes.forEach((m) => m.fail(error));
  };
  for (let rank = 0; rank < worldSize; rank++) {
    const mailbox = new Mailbox(
      new WorkerThread(WORKER_URL, { name: `allreduce-bench-${rank}` }),
      { onError: (error) => fail(new WorkerError(rank, error.message)) },
    );
    mailbox.handle<Message>("error", (m) => fail(new WorkerError(rank, String(m.message))));
    mailboxes.push(mailbox);
  }
  const close = () => mailboxes.forEach((m) => m.close());
  try {
    if (kind === "star") new StarAllReduceHub(mailboxes);
    mailboxes.forEach((mailbox, rank) => {
      const setup: BenchSetup = { type: "setup", kind, rank, worldSize, length, buffer, tcp };
      mailbox.send(setup);
    });
    await Promise.all(mailboxes.map((m) => m.receive("ready")));
  } catch (error) {
    close();
    throw failure ?? error;
  }
  return {
    async repeat() {
      try {
        mailboxes.forEach((mailbox) => mailbox.send({ type: "go", ops }));
        const done = await Promise.all(mailboxes.map((m) => m.receive<BenchDone>("done")));
        return Math.max(...done.map((d) => d.ms));
      } catch (error) {
        throw failure ?? error;
      }
    },
    close,
  };
}

/**
 * An `mpi` configuration: `mpirun -np worldSize` of `scripts/mpi_member.ts`,
 * one replica per process, driven through rank 0's stdin and stdout.
 * `launch.prefix` runs `mpirun` under another command (e.g. `ip netns exec
 * NS`), with `launch.args` added to its own.
 */
export async function startMpiGroup(
  config: {
    worldSize: number;
    length: number;
    ops: number;
    launch?: { prefix: readonly string[]; args: readonly string[] };
  },
): Promise<BenchGroup> {
  const member = new URL("../../scripts/mpi_member.ts", import.meta.url);
  const [command, ...prefixArgs] = [...(config.launch?.prefix ?? []), "mpirun"];
  const child = new Deno.Command(command, {
    args: [
      ...prefixArgs,
      "--allow-run-as-root",
      "--oversubscribe",
      "--bind-to",
      "none",
      ...(config.launch?.args ?? []),
      "-np",
      `${config.worldSize}`,
      Deno.execPath(),
      "run",
      "--allow-ffi",
      "--allow-env",
      "--allow-read",
      member.href,
      `--length=${config.length}`,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const replies = lines(child.stdout);
  const nextLine = async (): Promise<string> => {
    const { value, done } = await replies.next();
    if (!done) return value;
    const { code } = await child.status;
    // The first line that says something (Open MPI frames its messages in rows of dashes).
    const why = (await stderr).split("\n").map((line) => line.trim())
      .find((line) => line !== "" && !/^-+$/.test(line));
    throw new Error(`mpirun exited with status ${code}: ${why ?? "no message"}`);
  };
  const stdin = child.stdin.getWriter();
  const send = (line: string) => stdin.write(new TextEncoder().encode(`${line}\n`));
  const expect = async (pattern: RegExp) => {
    const line = await nextLine();
    const match = line.match(pattern);
    if (!match) throw new Error(`mpi member: expected ${pattern}, got "${line}"`);
    return match;
  };
  await expect(/^ready$/);
  return {
    async repeat() {
      await send(`go ${config.ops}`);
      return Number((await expect(/^done ([\d.e+-]+)$/))[1]);
    },
    async close() {
      await send("stop").then(() => stdin.close()).catch(() => {});
      // Every rank ends on "stop"; one that does not is killed, with mpirun.
      const guard = setTimeout(() => child.kill("SIGKILL"), 30_000);
      await child.status;
      clearTimeout(guard);
    },
  };
}

interface BenchSetup extends Message {
  type: "setup";
  kind: AllReduceBenchKind;
  rank: number;
  worldSize: number;
  length: number;
  buffer?: SharedAllReduceBuffer;
  /** `tcp`: rank 0's loopback port and the group's token. */
  tcp?: { port: number; token: string };
}

/**
 * The `move` operation: what the shared all-reduce moves, with plain copies
 * and no arithmetic. The worker writes its vector into shared memory; after a
 * barrier it copies chunk `rank` of every other worker's vector into chunk
 * `rank` of the result (the shared all-reduce reads those to sum them); after
 * a second barrier it copies the whole result back. Between cores, it moves
 * what every shared-memory all-reduce of this shape must move.
 */
function moveLikeSharedAllReduce(data: Float32Array, setup: BenchSetup): () => Promise<void> {
  const { rank, worldSize, length } = setup;
  const buffer = setup.buffer as SharedArrayBuffer;
  const barrier = new SharedBarrier(buffer, worldSize);
  const vector = (r: number) => new Float32Array(buffer, BARRIER_BYTES + 4 * r * length, length);
  const [mine, result] = [vector(rank), vector(worldSize)];
  const start = Math.floor((rank * length) / worldSize);
  const end = Math.floor(((rank + 1) * length) / worldSize);
  const others = Array.from({ length: worldSize }, (_, r) => r)
    .filter((r) => r !== rank)
    .map((r) => vector(r).subarray(start, end));
  return () => {
    mine.set(data);
    barrier.wait();
    for (const other of others) result.set(other, start);
    barrier.wait();
    data.set(result);
    return Promise.resolve();
  };
}

/** A loopback port free now (the kernel's choice). */
function freeLoopbackPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

interface BenchDone extends Message {
  type: "done";
  ms: number;
}

/**
 * The worker side of {@linkcode benchAllReduce}: repeats the operation it is
 * set up for whenever told to go, and reports how long the batch took.
 *
 * @example The whole of the benchmark's worker entry point
 * ```ts ignore
 * import { parentChannel } from "../collective/worker_thread.ts";
 * import { serveAllReduceBench } from "./all_reduce_bench.ts";
 *
 * await serveAllReduceBench(parentChannel());
 * ```
 */
export async function serveAllReduceBench(channel: Channel): Promise<void> {
  const mailbox = new Mailbox(channel);
  try {
    const setup = await mailbox.receive<BenchSetup>("setup");
    let data = new Float32Array(setup.length).fill(setup.rank + 1);
    const weight = setup.rank + 1;
    let op: () => Promise<void>;
    if (setup.kind === "copy") {
      // Write the vector into this worker's slot of shared memory and read it back.
      const slot = new Float32Array(
        setup.buffer as SharedArrayBuffer,
        0,
        setup.length * setup.worldSize,
      )
        .subarray(setup.rank * setup.length, (setup.rank + 1) * setup.length);
      op = () => {
        slot.set(data);
        data.set(slot);
        return Promise.resolve();
      };
    } else if (setup.kind === "move") {
      op = moveLikeSharedAllReduce(data, setup);
    } else if (setup.kind === "tcp" || setup.kind === "tcp-chain") {
      const group = await TcpProcessGroup.connect({
        averaging: setup.kind === "tcp" ? "auto" : "chain",
        rank: setup.rank,
        size: setup.worldSize,
        masterAddr: "127.0.0.1",
        masterPort: setup.tcp!.port,
        key: await importToken({ token: setup.tcp!.token }),
      });
      op = async () => {
        await group.average([{ data, weight }], { out: data });
      };
    } else {
      const allReduce: AllReduce = setup.kind === "shared" || setup.kind === "shared-scalar"
        ? new SharedAllReduce(setup.buffer!, setup)
        : new StarAllReduce(mailbox);
      op = async () => {
        data = await allReduce.average(data, weight);
      };
    }
    mailbox.send({ type: "ready" });
    for (;;) {
      const { ops } = await mailbox.receive<Message & { ops: number }>("go");
      const started = performance.now();
      for (let i = 0; i < ops; i++) await op();
      const done: BenchDone = { type: "done", ms: performance.now() - started };
      mailbox.send(done);
    }
  } catch (error) {
    if (mailbox.error) return; // closed by the coordinator
    mailbox.send({
      type: "error",
      message: error instanceof Error ? error.message : String(error),
    });
  }
}
