/**
 * What every named data set does with its files: where its download cache
 * is, whether a file is there, and whether published files still have their
 * official SHA-256 (each file hashed once, remembered by identity).
 *
 * @module
 */

import { join, resolve } from "node:path";
import { DataError } from "../errors.ts";
import { writeFileAtomic } from "../util/atomic_write.ts";
import { ProgressBar } from "../util/progress.ts";
import { sha256Hex } from "../util/sha256.ts";
import { downloadVerified } from "./download.ts";

/** One published file: its name and SHA-256. */
export interface FileSpec {
  /** File name, e.g. `train-images-idx3-ubyte.gz`. */
  name: string;
  /** SHA-256 of the file as published, lowercase hex. */
  sha256: string;
}

/** What every named data set's loader takes beside where its files are. */
export interface DatasetDownloadOptions {
  /** Whether to download missing files into `cacheDir`. Default true. */
  download?: boolean;
  /** Download cache. Default: the data set's folder of `~/.cache/deno-ddp` (see `XDG_CACHE_HOME`). */
  cacheDir?: string;
  /** Where to download from. Default: where the data set is published. */
  baseUrl?: string;
  /** Suppress download messages on stderr. */
  quiet?: boolean;
  /** Aborting it abandons a download in progress; the signal's reason is thrown. */
  signal?: AbortSignal;
}

/**
 * Downloads `spec` from `baseUrl` into `dir`, SHA-256-verified, with a
 * progress bar (or one line) on stderr unless `quiet`. A failure is a
 * {@linkcode DataError} ending with `hint` (where to put the file instead).
 */
export async function downloadInto(
  dir: string,
  spec: FileSpec,
  options: DatasetDownloadOptions & { baseUrl: string; maxBytes?: number; hint: string },
): Promise<string> {
  const path = join(dir, spec.name);
  await Deno.mkdir(dir, { recursive: true });
  const url = new URL(spec.name, options.baseUrl).href;
  const bar = new ProgressBar(1, { label: `downloading ${spec.name}` });
  if (!options.quiet && !bar.enabled) console.error(`downloading ${url}`);
  try {
    await downloadVerified(url, path, {
      sha256: spec.sha256,
      maxBytes: options.maxBytes,
      signal: options.signal,
      onProgress: (received, total) => {
        if (options.quiet || total === undefined) return;
        bar.update(received / total, `${(received / 1e6).toFixed(1)} MB`);
      },
    });
  } catch (error) {
    if (error instanceof DataError) {
      throw new DataError(`${error.message}; ${options.hint}`, { cause: error });
    }
    throw error;
  } finally {
    bar.clear();
  }
  return path;
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
