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
  /** The most bytes accepted; a larger body (announced or received) is refused. Default 64 MiB. */
  maxBytes?: number;
  /**
   * Seconds without progress — no response headers, or no byte of the body —
   * after which the download is abandoned. Default 30.
   */
  idleTimeout?: number;
  /**
   * Seconds the whole download may take, however steadily bytes arrive.
   * Default 1800.
   */
  deadline?: number;
  /**
   * The slowest accepted rate, in bytes per second, averaged over each
   * `rateWindow` seconds once the first has passed: a server that trickles
   * (a byte every few seconds resets any idle timeout) is given up.
   * Default 4096.
   */
  minRate?: number;
  /** Seconds over which `minRate` is averaged. Default 60. */
  rateWindow?: number;
  /** Aborting it abandons the download (Ctrl-C); the signal's reason is thrown. */
  signal?: AbortSignal;
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
  const maxBytes = options.maxBytes ?? 64 * 2 ** 20;
  const idleMs = (options.idleTimeout ?? 30) * 1000;
  const abort = new AbortController();
  // The whole download's deadline and its slowest accepted rate (see DownloadOptions).
  const deadlineS = options.deadline ?? 1800;
  const minRate = options.minRate ?? 4096;
  const windowS = options.rateWindow ?? 60;
  const progress = { received: 0, atWindowStart: 0 };
  const overall = setTimeout(
    () => abort.abort(new Error(`not done within ${deadlineS} s`)),
    deadlineS * 1000,
  );
  const rate = setInterval(() => {
    const got = progress.received - progress.atWindowStart;
    if (got < minRate * windowS) {
      abort.abort(
        new Error(
          `${got} bytes in the last ${windowS} s, slower than the ${minRate} bytes/s accepted`,
        ),
      );
    }
    progress.atWindowStart = progress.received;
  }, windowS * 1000);
  let idle: ReturnType<typeof setTimeout> | undefined;
  const stall = () => {
    clearTimeout(idle);
    idle = setTimeout(() => abort.abort(new Error(`no progress for ${idleMs / 1000} s`)), idleMs);
  };
  const cancel = () => abort.abort(options.signal?.reason);
  options.signal?.addEventListener("abort", cancel);
  const failure = (error: unknown, what: string) => {
    if (options.signal?.aborted) return options.signal.reason;
    const why = abort.signal.aborted ? reason(abort.signal.reason) : reason(error);
    return new DataError(`cannot download ${url}: ${what}${why}`, { cause: error });
  };
  try {
    options.signal?.throwIfAborted();
    stall();
    return await receive(url, path, { ...options, maxBytes, stall, abort, failure, progress });
  } finally {
    clearTimeout(idle);
    clearTimeout(overall);
    clearInterval(rate);
    options.signal?.removeEventListener("abort", cancel);
  }
}

async function receive(
  url: string,
  path: string,
  options: DownloadOptions & {
    maxBytes: number;
    stall: () => void;
    abort: AbortController;
    failure: (error: unknown, what: string) => unknown;
    progress: { received: number };
  },
): Promise<void> {
  let response: Response;
  try {
    response = await fetch(url, { signal: options.abort.signal });
  } catch (error) {
    throw options.failure(error, "");
  }
  options.stall();
  if (!response.ok || response.body === null) {
    await response.body?.cancel();
    throw new DataError(`cannot download ${url}: HTTP ${response.status} ${response.statusText}`);
  }
  const header = response.headers.get("content-length");
  const total = header === null ? undefined : Number(header);
  if (total !== undefined && total > options.maxBytes) {
    await response.body.cancel();
    throw new DataError(
      `cannot download ${url}: it announces ${total} bytes, over the limit of ${options.maxBytes}`,
    );
  }
  const chunks: Uint8Array[] = [];
  let received = 0;
  try {
    for await (const chunk of response.body) {
      options.stall();
      chunks.push(chunk);
      received += chunk.length;
      options.progress.received = received;
      if (received > options.maxBytes) {
        throw new DataError(
          `cannot download ${url}: more than the limit of ${options.maxBytes} bytes`,
        );
      }
      options.onProgress?.(received, total);
    }
  } catch (error) {
    if (error instanceof DataError) throw error;
    const what = options.abort.signal.aborted ? "gave up after" : "connection lost after";
    throw options.failure(error, `${what} ${received} bytes: `);
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
