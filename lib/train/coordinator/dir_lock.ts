/**
 * One run per checkpoint directory at a time: an exclusive lock file,
 * `.lock`, created with `createNew` (so of two runs started at once, exactly
 * one gets it), holding the run's id, process id, host and start time, and
 * removed when the run ends — however it ends, short of the process being
 * killed. The holder touches the file every {@linkcode LOCK_HEARTBEAT_MS};
 * a lock not touched for {@linkcode LOCK_STALE_MS} was left by a killed run
 * and is taken over. (A heartbeat rather than a process check: Deno reads
 * `/proc` only with `--allow-all`, and a shared file system may hold another
 * host's lock.)
 *
 * @module
 */

import { join } from "node:path";
import { UsageError } from "../../errors.ts";

/** The lock file's name in a checkpoint directory. */
export const LOCK_FILE = ".lock";

/** How often a run touches its lock. */
export const LOCK_HEARTBEAT_MS = 5_000;

/** A lock untouched for this long is a killed run's. */
export const LOCK_STALE_MS = 30_000;

/** What a lock file says about its holder. */
export interface LockHolder {
  /** The run's identity. */
  runId: string;
  /** Its process id. */
  pid: number;
  /** Its host, where known. */
  host: string;
  /** When it took the lock, ISO 8601. */
  since: string;
}

/** A held lock: {@linkcode DirLock.release} removes it. */
export interface DirLock {
  /** The lock file. */
  readonly path: string;
  /** Stops the heartbeat and removes the lock file, if it is still this run's. Never throws. */
  release(): Promise<void>;
}

/**
 * Takes `dir`'s lock for run `runId`, or throws a one-line `UsageError`
 * naming the run that holds it. A lock untouched for
 * {@linkcode LOCK_STALE_MS} is taken over.
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
export async function acquireDirLock(dir: string, run: { runId: string }): Promise<DirLock> {
  const path = join(dir, LOCK_FILE);
  const me: LockHolder = {
    runId: run.runId,
    pid: Deno.pid,
    host: thisHost(),
    since: new Date().toISOString(),
  };
  for (let attempt = 0;; attempt++) {
    try {
      const file = await Deno.open(path, { createNew: true, write: true });
      try {
        await file.write(new TextEncoder().encode(JSON.stringify(me) + "\n"));
      } finally {
        file.close();
      }
      const heartbeat = setInterval(() => {
        const now = new Date();
        Deno.utime(path, now, now).catch(() => {}); // gone: release() will find out
      }, LOCK_HEARTBEAT_MS);
      Deno.unrefTimer(heartbeat);
      return {
        path,
        release: () => {
          clearInterval(heartbeat);
          return releaseIfMine(path, me);
        },
      };
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) {
        throw new UsageError(
          `checkpoint directory ${dir}: cannot create ${LOCK_FILE}: ${(error as Error).message}`,
        );
      }
    }
    const holder = await readHolder(path);
    const age = await ageMs(path);
    if (age !== undefined && age > LOCK_STALE_MS && attempt === 0) {
      // Not touched for long: its run was killed. Of two runs taking it over, createNew picks one.
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
    const info = await Deno.stat(path);
    if (!info.isFile || info.size > 4096) return undefined;
    const holder = JSON.parse(await Deno.readTextFile(path)) as LockHolder;
    const ok = typeof holder.runId === "string" && Number.isSafeInteger(holder.pid) &&
      typeof holder.host === "string" && typeof holder.since === "string";
    return ok ? holder : undefined;
  } catch {
    return undefined;
  }
}

/** Milliseconds since the lock file was last touched, or undefined. */
async function ageMs(path: string): Promise<number | undefined> {
  try {
    const mtime = (await Deno.stat(path)).mtime;
    return mtime ? Date.now() - mtime.getTime() : undefined;
  } catch {
    return undefined;
  }
}

async function releaseIfMine(path: string, me: LockHolder): Promise<void> {
  const holder = await readHolder(path);
  if (holder?.runId === me.runId && holder.pid === me.pid) await Deno.remove(path).catch(() => {});
}

/** This host's name where Deno may tell it (`--allow-sys=hostname`), else "an unnamed host". */
function thisHost(): string {
  try {
    return Deno.permissions.querySync({ name: "sys", kind: "hostname" }).state === "granted"
      ? Deno.hostname()
      : "an unnamed host";
  } catch {
    return "an unnamed host";
  }
}
