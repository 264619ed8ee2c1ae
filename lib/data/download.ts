/**
 * Downloading a file whose SHA-256 is known in advance, atomically.
 *
 * @module
 */

import { DataError } from "../errors.ts";
import { writeFileAtomic } from "../util/atomic_write.ts";
import { sha256Hex } from "../util/sha256.ts";

/** Options for {@linkcode downloadVerified}. */
export interface DownloadOptions {
  /** Expected SHA-256 of the file, lowercase hex. */
  sha256: string;
  /** Called as bytes arrive; `total` is undefined when the server sends no length. */
  onProgress?: (received: number, total: number | undefined) => void;
}

/**
 * Downloads `url` to `path`, verifying its SHA-256 before anything is written.
 *
 * The body is held in memory, checked against `sha256` and only then written
 * to disk through a temporary file, `fsync` and rename, so `path` is either
 * absent or complete and correct. Throws a {@linkcode DataError} for HTTP
 * errors, network failures, short bodies and checksum mismatches.
 *
 * @example
 * ```ts ignore
 * import { downloadVerified } from "./download.ts";
 *
 * await downloadVerified(
 *   "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz",
 *   "/tmp/t10k-labels-idx1-ubyte.gz",
 *   { sha256: "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5" },
 * );
 * ```
 */
export async function downloadVerified(
  url: string,
  path: string,
  options: DownloadOptions,
): Promise<void> {
  let response: Response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new DataError(`cannot download ${url}: ${reason(error)}`, { cause: error });
  }
  if (!response.ok || response.body === null) {
    await response.body?.cancel();
    throw new DataError(`cannot download ${url}: HTTP ${response.status} ${response.statusText}`);
  }
  const header = response.headers.get("content-length");
  const total = header === null ? undefined : Number(header);
  const chunks: Uint8Array[] = [];
  let received = 0;
  try {
    for await (const chunk of response.body) {
      chunks.push(chunk);
      received += chunk.length;
      options.onProgress?.(received, total);
    }
  } catch (error) {
    throw new DataError(
      `cannot download ${url}: connection lost after ${received} bytes (${reason(error)})`,
      { cause: error },
    );
  }
  if (total !== undefined && received !== total) {
    throw new DataError(`cannot download ${url}: truncated, got ${received} of ${total} bytes`);
  }
  const body = new Uint8Array(received);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.length;
  }
  const actual = await sha256Hex(body);
  if (actual !== options.sha256.toLowerCase()) {
    throw new DataError(
      `cannot download ${url}: SHA-256 mismatch (got ${actual}, expected ${options.sha256}); nothing was written`,
    );
  }
  await writeFileAtomic(path, body);
}

function reason(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
