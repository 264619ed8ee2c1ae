/**
 * What a member's thread learns of its WebGPU adapter, kept free of Deno's
 * process APIs at import time, so that the same code runs in a browser tab
 * (see `workers/browser_member.ts`): the adapter's name, and the WebGPU path
 * `DENO_WEBGPU_BACKEND` names (Deno only; undefined elsewhere).
 *
 * @module
 */

/** The variable that chooses Deno's WebGPU path (see `chooseWebGPUPath`). */
export const WEBGPU_PATH_VARIABLE = "DENO_WEBGPU_BACKEND";

/**
 * The path `DENO_WEBGPU_BACKEND` names now, which is the one a thread asking
 * for its first adapter now gets; undefined when it is unset or unreadable.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pathInEffect } from "./_adapter.ts";
 *
 * const before = Deno.env.get("DENO_WEBGPU_BACKEND");
 * Deno.env.set("DENO_WEBGPU_BACKEND", "gl");
 * assert.equal(pathInEffect(), "gl");
 * if (before === undefined) Deno.env.delete("DENO_WEBGPU_BACKEND");
 * else Deno.env.set("DENO_WEBGPU_BACKEND", before);
 * ```
 */
export function pathInEffect(): string | undefined {
  try {
    return Deno.env.get(WEBGPU_PATH_VARIABLE) || undefined;
  } catch {
    return undefined; // no --allow-env
  }
}

/**
 * A readable name for an adapter: its description (e.g. `llvmpipe (LLVM
 * 15.0.6, 256 bits)`), else its vendor, architecture and device.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { describeAdapter } from "./_adapter.ts";
 *
 * assert.equal(describeAdapter({ description: "", vendor: "65541", architecture: "", device: "0" }), "65541 0");
 * ```
 */
export function describeAdapter(
  info: Pick<GPUAdapterInfo, "description" | "vendor" | "architecture" | "device">,
): string {
  return info.description ||
    [info.vendor, info.architecture, info.device].filter((part) => part).join(" ") ||
    "unknown WebGPU adapter";
}

/**
 * Mesa's Vulkan drivers probe for a Wayland display and, when
 * `XDG_RUNTIME_DIR` is unset (as on servers and in CI), print "error:
 * XDG_RUNTIME_DIR is invalid or not set in the environment." once per device,
 * although compute needs no display. An absolute path that holds no Wayland
 * socket makes the probe fail quietly instead. Call it before the first
 * adapter request of the process.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { silenceWaylandProbe } from "./_adapter.ts";
 *
 * silenceWaylandProbe();
 * assert.ok(Deno.env.get("XDG_RUNTIME_DIR"));
 * ```
 */
export function silenceWaylandProbe(): void {
  try {
    if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", "/nonexistent");
  } catch {
    // Without --allow-env the message stays; it is harmless.
  }
}
