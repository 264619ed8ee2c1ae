/**
 * The checkpoint directory of one training run, as the coordinator uses it.
 *
 * @module
 */

import { basename, join } from "node:path";
import { DataError, UsageError } from "../../errors.ts";
import {
  listCheckpoints,
  parseCheckpointName,
  readCheckpoint,
  type TrainingState,
  writeCheckpoint,
} from "../shared/checkpoint.ts";
import { probeWritable } from "../../util/atomic_write.ts";
import { acquireDirLock, type DirLock } from "./dir_lock.ts";

/** Options for {@linkcode CheckpointStore.open}. */
export interface CheckpointStoreOptions {
  /** The run's identity, recorded in every checkpoint it writes. */
  runId: string;
  /** How many of this run's checkpoints to keep (at least 1). */
  keep: number;
  /** Whether the run continues from a checkpoint (of this directory or not). */
  resuming: boolean;
  /**
   * Start a fresh run in a directory that holds other checkpoints, deleting
   * them once this run has written its first checkpoint. Default false: such
   * a directory is refused.
   */
  overwrite?: boolean;
}

/**
 * One run's checkpoint directory, like a careful user keeps it by hand:
 * checked for writing before any work is done, one run per directory, and
 * pruned only of this run's own checkpoints, each verified when written.
 *
 * - {@linkcode CheckpointStore.open} creates the directory, proves it can be
 *   written (a probe file is written and removed), takes its lock (one run
 *   at a time: see dir_lock.ts), removes the temporary
 *   `.partial` files a killed save left behind, and refuses a fresh run where
 *   checkpoints of another run (or files named like checkpoints) are — unless
 *   `overwrite` is given — so that two runs never mix.
 * - {@linkcode CheckpointStore.save} writes atomically, reads the file back and
 *   verifies it, and only then deletes this run's oldest checkpoints beyond
 *   `keep`: never the one just written, never another run's file, never a
 *   file it could not verify.
 *
 * @example
 * ```ts ignore
 * import { CheckpointStore } from "./checkpoint_store.ts";
 *
 * const store = await CheckpointStore.open("./ckpt", { runId: crypto.randomUUID(), keep: 3, resuming: false });
 * const path = await store.save(state); // state.runId === store.runId
 * ```
 */
export class CheckpointStore {
  /** The directory. */
  readonly dir: string;
  /** The run whose checkpoints this store writes and prunes. */
  readonly runId: string;
  readonly #keep: number;
  /** This run's verified checkpoints, oldest first. */
  readonly #own: string[];
  /** Other checkpoints to delete after the first save (with `overwrite`). */
  #replaced: string[];
  /** This run's hold on the directory. */
  readonly #lock: DirLock;

  private constructor(dir: string, parts: {
    runId: string;
    keep: number;
    own: string[];
    replaced: string[];
    lock: DirLock;
  }) {
    this.dir = dir;
    this.runId = parts.runId;
    this.#keep = parts.keep;
    this.#own = parts.own;
    this.#replaced = parts.replaced;
    this.#lock = parts.lock;
  }

  /**
   * Prepares `dir` for the run `options.runId`. Throws a `UsageError` (one
   * line, with what to do) when the directory cannot be created or written,
   * or when a fresh run would mix with other checkpoints there.
   */
  static async open(dir: string, options: CheckpointStoreOptions): Promise<CheckpointStore> {
    await ensureWritableDir(dir);
    const lock = await acquireDirLock(dir, { runId: options.runId });
    try {
      return await CheckpointStore.#openLocked(dir, options, lock);
    } catch (error) {
      await lock.release();
      throw error;
    }
  }

  static async #openLocked(
    dir: string,
    options: CheckpointStoreOptions,
    lock: DirLock,
  ): Promise<CheckpointStore> {
    await sweepPartials(dir);
    const own: string[] = [];
    const others: string[] = [];
    for (const { path, isFile } of await listCheckpoints(dir, { allEntries: true })) {
      if (!isFile) {
        throw new UsageError(
          `checkpoint directory ${dir} holds ${basename(path)}, which is not a regular file but ` +
            `is named like a checkpoint: remove or rename it`,
        );
      }
      if (options.resuming && await runOf(path) === options.runId) own.push(path);
      else others.push(path);
    }
    if (!options.resuming && others.length > 0 && !options.overwrite) {
      throw new UsageError(
        `checkpoint directory ${dir} holds ${others.length} checkpoint(s) of another run ` +
          `(newest ${others.at(-1)!.slice(dir.length + 1)}): continue that run with --resume, ` +
          `choose another --checkpoint-dir, or pass --overwrite to start a new run there ` +
          `(they are deleted once its first checkpoint is written)`,
      );
    }
    return new CheckpointStore(dir, {
      runId: options.runId,
      keep: options.keep,
      own,
      replaced: options.resuming ? [] : others,
      lock,
    });
  }

  /** Gives the directory up: removes this run's lock. */
  async close(): Promise<void> {
    await this.#lock.release();
  }

  /** {@linkcode CheckpointStore.close}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * Writes `state` (whose `runId` must be this store's) atomically, verifies
   * what was written, then prunes; resolves with the file's path.
   */
  async save(state: TrainingState): Promise<string> {
    if (state.runId !== this.runId) {
      throw new Error(`checkpoint of run ${state.runId} given to the store of run ${this.runId}`);
    }
    const path = await writeCheckpoint(this.dir, state);
    const at = this.#own.indexOf(path);
    if (at >= 0) this.#own.splice(at, 1);
    this.#own.push(path);
    while (this.#own.length > this.#keep) {
      await Deno.remove(this.#own.shift()!).catch(() => {});
    }
    for (const other of this.#replaced) await Deno.remove(other).catch(() => {});
    this.#replaced = [];
    return path;
  }
}

/** Creates `dir` if needed and proves it can be written, or throws a `UsageError`. */
async function ensureWritableDir(dir: string): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true });
  } catch (error) {
    const reason = error instanceof Deno.errors.AlreadyExists
      ? "it exists and is not a directory"
      : (error as Error).message;
    throw new UsageError(`checkpoint directory ${dir} cannot be created: ${reason}`);
  }
  try {
    await probeWritable(dir);
  } catch (error) {
    throw new UsageError(
      `checkpoint directory ${dir} cannot be written: ${(error as Error).message}`,
    );
  }
}

/** Removes the temporary files of saves that were killed before their rename. */
async function sweepPartials(dir: string): Promise<void> {
  for await (const entry of Deno.readDir(dir)) {
    const target = entry.name.match(/^\.(.+)\.\d+-[0-9a-f]{8}\.partial$/)?.[1];
    if (entry.isFile && target !== undefined && parseCheckpointName(target)) {
      await Deno.remove(join(dir, entry.name)).catch(() => {});
    }
  }
}

/** The run a checkpoint file belongs to, or undefined when it does not verify. */
async function runOf(path: string): Promise<string | undefined> {
  try {
    return (await readCheckpoint(path)).runId;
  } catch (error) {
    if (error instanceof DataError) return undefined;
    throw error;
  }
}
