/**
 * Writing files so that a reader sees either the old content or the new one,
 * never a half-written file.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";

/**
 * Writes `data` to `path` atomically: the bytes go to a temporary file in the
 * same directory, which is flushed to disk and then renamed over `path`. If
 * anything fails the temporary file is removed and `path` is left as it was.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { writeFileAtomic } from "./atomic_write.ts";
 *
 * const dir = await Deno.makeTempDir();
 * await writeFileAtomic(`${dir}/metrics.jsonl`, new TextEncoder().encode('{"epoch":1}\n'));
 * assert.ok((await Deno.readTextFile(`${dir}/metrics.jsonl`)).startsWith("{"));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const suffix = `${Deno.pid}-${crypto.randomUUID().slice(0, 8)}.partial`;
  const temp = join(dirname(path), `.${basename(path)}.${suffix}`);
  try {
    const file = await Deno.open(temp, { write: true, createNew: true });
    try {
      let written = 0;
      while (written < bytes.length) written += await file.write(bytes.subarray(written));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(temp, path);
  } catch (error) {
    await Deno.remove(temp).catch(() => {});
    throw error;
  }
}

/**
 * Proves that files can be created in `dir` — as {@linkcode writeFileAtomic}
 * does — by creating a one-byte probe file there and removing it. Rejects
 * with the system's error when it cannot; use it before long work whose
 * results will be written there.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { probeWritable } from "./atomic_write.ts";
 *
 * const dir = await Deno.makeTempDir();
 * await probeWritable(dir); // leaves nothing behind
 * assert.deepEqual(await Array.fromAsync(Deno.readDir(dir)), []);
 * await Deno.remove(dir);
 * await assert.rejects(probeWritable("/nonexistent/dir"));
 * ```
 */
export async function probeWritable(dir: string): Promise<void> {
  const probe = join(dir, `.write-test-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`);
  await Deno.writeFile(probe, new Uint8Array(1), { createNew: true });
  await Deno.remove(probe);
}
