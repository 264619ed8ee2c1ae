/**
 * Opt-in tracing of the training protocol, for diagnosing a run that stalls:
 * with `DDP_TRACE=1` in the environment, every message sent or received and
 * every phase of a worker's start-up is written to stderr with a timestamp.
 *
 * @module
 */

const enabled = readEnabled();

/**
 * Writes `[trace <time> <who>] <what>` to stderr when `DDP_TRACE` is set;
 * does nothing otherwise.
 *
 * @example
 * ```ts
 * import { trace } from "./trace.ts";
 *
 * trace("worker 1", "requesting a WebGPU adapter");
 * ```
 */
export function trace(who: string, what: string): void {
  if (enabled) console.error(`[trace ${new Date().toISOString().slice(11, 23)} ${who}] ${what}`);
}

function readEnabled(): boolean {
  try {
    return Boolean(Deno.env.get("DDP_TRACE"));
  } catch {
    return false;
  }
}
