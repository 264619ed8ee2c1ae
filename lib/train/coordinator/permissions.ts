/**
 * The Deno permissions a run needs, checked before any work: without them a
 * run fails half-way with a stack trace (a worker thread whose module cannot
 * be read) or floods stderr with driver messages (Mesa's Vulkan driver, when
 * it may not be configured through the environment).
 *
 * - **read** — the library's own files, which every worker thread loads;
 * - **env** (WebGPU only) — the variables the library sets for the driver
 *   before the workers start: `XDG_RUNTIME_DIR`, `LP_NUM_THREADS`,
 *   `DENO_WEBGPU_BACKEND`.
 *
 * Write (checkpoints, the download cache) and net (downloads, other
 * processes) are checked where they are used, each failure one line naming
 * the path or host.
 *
 * @module
 */

import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { UsageError } from "../../errors.ts";

/** The environment variables the library sets for the WebGPU driver. */
export const DRIVER_VARIABLES: readonly string[] = [
  "XDG_RUNTIME_DIR",
  "LP_NUM_THREADS",
  "DENO_WEBGPU_BACKEND",
];

/**
 * Throws a one-line `UsageError` naming the flag to add when this process
 * may not read `workerUrl` (a `file:` URL), or, with the `webgpu` backend,
 * may not read and set the driver's variables.
 *
 * @example
 * ```ts
 * import { checkPermissions } from "./permissions.ts";
 *
 * checkPermissions({
 *   backend: "cpu",
 *   workerUrl: new URL("../../../workers/replica_worker.ts", import.meta.url),
 * }); // with --allow-read: nothing to say
 * ```
 */
export function checkPermissions(run: { backend: string; workerUrl: URL | string }): void {
  const url = new URL(run.workerUrl);
  if (url.protocol === "file:") {
    const path = fileURLToPath(url);
    if (Deno.permissions.querySync({ name: "read", path }).state !== "granted") {
      throw new UsageError(
        `train() starts worker threads from ${dirname(dirname(path))}: it needs read access ` +
          `there (--allow-read, or add that directory to --allow-read=…)`,
      );
    }
  }
  if (run.backend !== "webgpu") return;
  const missing = DRIVER_VARIABLES.filter((variable) =>
    Deno.permissions.querySync({ name: "env", variable }).state !== "granted"
  );
  if (missing.length > 0) {
    throw new UsageError(
      `the webgpu backend needs --allow-env (at least ${missing.join(", ")}): the library sets ` +
        `them for the graphics driver before the workers start`,
    );
  }
}
