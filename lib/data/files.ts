/**
 * What every named data set does with its files: where its download cache
 * is, whether a file is there, and whether published files still have their
 * official SHA-256 (each file hashed once, remembered by identity).
 *
 * @module
 */

import { join, resolve } from "node:path";
import { writeFileAtomic } from "../util/atomic_write.ts";
import { sha256Hex } from "../util/sha256.ts";

/** One published file: its name and SHA-256. */
export interface FileSpec {
  /** File name, e.g. `train-images-idx3-ubyte.gz`. */
  name: string;
  /** SHA-256 of the file as published, lowercase hex. */
  sha256: string;
}

/**
 * The download cache of data set `name`: `$XDG_CACHE_HOME/deno-ddp/NAME`, or
 * `~/.cache/deno-ddp/NAME`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cacheDirOf } from "./files.ts";
 *
 * assert.ok(cacheDirOf("cifar-10").endsWith("cifar-10"));
 * ```
 */
export function cacheDirOf(name: string): string {
  const base = readEnv("XDG_CACHE_HOME") ??
    join(readEnv("HOME") ?? readEnv("USERPROFILE") ?? ".", ".cache");
  return join(base, "deno-ddp", name);
}

/**
 * The files among `files` (gzipped ones only: they have an official
 * checksum) whose SHA-256 is not the official one, or that are larger than
 * `maxBytes`. Files already found good are remembered by identity (path,
 * size, mtime, inode) in `verified.json` in `cacheDir`, so each is hashed
 * once.
 */
export async function differingFromOfficial(
  files: readonly { path: string; spec: FileSpec }[],
  options: { cacheDir: string; create: boolean; maxBytes: number },
): Promise<string[]> {
  const { cacheDir } = options;
  const record = join(cacheDir, "verified.json");
  let verified: Record<string, string> = {};
  try {
    verified = JSON.parse(await Deno.readTextFile(record));
  } catch {
    // none yet, or unreadable: verify everything
  }
  const differing: string[] = [];
  let learned = false;
  for (const { path, spec } of files) {
    if (!path.endsWith(".gz")) continue;
    const info = await Deno.stat(path);
    if (info.size > options.maxBytes) { // larger than the official file: no need to read it
      differing.push(path);
      continue;
    }
    const identity = `${info.size}:${info.mtime?.getTime()}:${info.ino}`;
    const absolute = resolve(path);
    if (verified[absolute] === `${identity}:${spec.sha256}`) continue;
    if (await sha256Hex(await Deno.readFile(path)) !== spec.sha256) {
      differing.push(path);
      continue;
    }
    verified[absolute] = `${identity}:${spec.sha256}`;
    learned = true;
  }
  if (learned) {
    try {
      if (options.create) await Deno.mkdir(cacheDir, { recursive: true });
      await writeFileAtomic(record, JSON.stringify(verified, null, 1));
    } catch {
      // a missing or read-only cache directory only costs hashing again next time
    }
  }
  return differing;
}

/** Whether `path` is a regular file. */
export async function isFile(path: string): Promise<boolean> {
  const stat = await Deno.stat(path).catch(() => null);
  return stat !== null && stat.isFile;
}

/** An environment variable, or undefined when unset, empty or not allowed. */
export function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env: behave as if unset
  }
}
