/**
 * One run per checkpoint directory at a time: an exclusive lock file,
 * `.lock`, created with `createNew` (so of two runs started at once, exactly
 * one gets it), holding the run's id, process id, host and start time, and
 * removed when the run ends — however it ends, short of the process being
 * killed. A lock left by a killed process on this host is taken over once its
 * process is gone; a lock of another host (a shared file system) is never
 * taken over: the message says how to remove it.
 *
 * @module
 */

import { join } from "node:path";
import { UsageError } from "../../errors.ts";

/** The lock file's name in a checkpoint directory. */
export const LOCK_FILE = ".lock";

/** What a lock file says about its holder. */
export interface LockHolder {
  /** The run's identity. */
  runId: string;
  /** Its process id. */
  pid: number;
  /** Its host. */
  host: string;
  /** When it took the lock, ISO 8601. */
  since: string;
}

/** A held lock: {@linkcode DirLock.release} removes it. */
export interface DirLock {
  /** The lock file. */
  readonly path: string;
  /** Removes the lock file, if it is still this run's. Never throws. */
  release(): Promise<void>;
}

/**
 * Takes `dir`'s lock for run `runId`, or throws a one-line `UsageError`
 * naming the run that holds it. A lock whose process is gone (same host) is
 * taken over. `isAlive` says whether a process of this host runs (default:
 * `/proc/PID` exists, on Linux; elsewhere every process counts as alive).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { acquireDirLock } from "./dir_lock.ts";
 *
 * const dir = await Deno.makeTempDir();
 * const lock = await acquireDirLock(dir, { runId: "run-a" });
 * await assert.rejects(acquireDirLock(dir, { runId: "run-b" }), /is in use by run run-a/);
 * await lock.release();
 * await (await acquireDirLock(dir, { runId: "run-b" })).release();
 * await Deno.remove(dir);
 * ```
 */
export async function acquireDirLock(
  dir: string,
  run: { runId: string; isAlive?: (pid: number) => boolean },
): Promise<DirLock> {
  const path = join(dir, LOCK_FILE);
  const me: LockHolder = {
    runId: run.runId,
    pid: Deno.pid,
    host: thisHost(),
    since: new Date().toISOString(),
  };
  const isAlive = run.isAlive ?? processExists;
  for (let attempt = 0;; attempt++) {
    try {
      const file = await Deno.open(path, { createNew: true, write: true });
      try {
        await file.write(new TextEncoder().encode(JSON.stringify(me) + "\n"));
      } finally {
        file.close();
      }
      return { path, release: () => releaseIfMine(path, me) };
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) {
        throw new UsageError(
          `checkpoint directory ${dir}: cannot create ${LOCK_FILE}: ${(error as Error).message}`,
        );
      }
    }
    const holder = await readHolder(path);
    const stale = holder !== undefined && holder.host === me.host && holder.pid !== me.pid &&
      !isAlive(holder.pid);
    if (stale && attempt === 0) {
      // Its process is gone (killed): the lock is this run's to take. Only one run may remove it.
      await Deno.remove(path).catch(() => {});
      continue;
    }
    const who = holder
      ? `run ${holder.runId} (process ${holder.pid} on ${holder.host}, since ${holder.since})`
      : "another run (its lock file cannot be read)";
    throw new UsageError(
      `checkpoint directory ${dir} is in use by ${who}: wait for it to end, use another ` +
        `directory, or remove ${path} if that run is gone`,
    );
  }
}

/** The holder a lock file names, or undefined when it cannot be read as one. */
async function readHolder(path: string): Promise<LockHolder | undefined> {
  try {
    const text = await Deno.readTextFile(path);
    if (text.length > 4096) return undefined;
    const holder = JSON.parse(text) as LockHolder;
    const ok = typeof holder.runId === "string" && Number.isSafeInteger(holder.pid) &&
      typeof holder.host === "string" && typeof holder.since === "string";
    return ok ? holder : undefined;
  } catch {
    return undefined;
  }
}

async function releaseIfMine(path: string, me: LockHolder): Promise<void> {
  const holder = await readHolder(path);
  if (holder?.runId === me.runId && holder.pid === me.pid) await Deno.remove(path).catch(() => {});
}

/** Whether process `pid` of this host runs: `/proc/PID` exists (Linux); elsewhere, assumed so. */
function processExists(pid: number): boolean {
  if (Deno.build.os !== "linux") return true;
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch (error) {
    return !(error instanceof Deno.errors.NotFound);
  }
}

/**
 * This host's name: from `/proc/sys/kernel/hostname` (Linux, read access
 * only), else `Deno.hostname()` (which needs `--allow-sys`), else "unknown".
 */
function thisHost(): string {
  try {
    return Deno.readTextFileSync("/proc/sys/kernel/hostname").trim();
  } catch {
    try {
      return Deno.hostname();
    } catch {
      return "unknown";
    }
  }
}
