/**
 * Which graphics API ("path") WebGPU goes through, chosen once per process
 * before any worker creates its device.
 *
 * Deno's WebGPU (wgpu) can reach the same adapter through several APIs. On a
 * machine without a GPU, Mesa's llvmpipe is reachable through GL and, when
 * Mesa's Vulkan driver (lavapipe) is installed, through Vulkan. Through GL the
 * GPU work of all workers is serialised; through Vulkan each worker's device
 * runs in parallel. Measured on a 2-core machine, NiN at 67 px, width ⅛, 32
 * images per worker (`deno task bench --only scaling --workers 1,2`): 0.98×
 * with two workers through GL, 1.95× through Vulkan, which also ran a
 * one-worker step in 636 ms instead of 1044 ms.
 *
 * Deno reads `DENO_WEBGPU_BACKEND` (e.g. `vulkan`, `gl`) once per thread, when
 * the thread first asks for an adapter. {@linkcode chooseWebGPUPath} tries
 * the paths in order of preference, each in a fresh probe thread, and sets
 * `DENO_WEBGPU_BACKEND` to the first that has an adapter, so that every
 * thread started afterwards — the workers — uses it. A value the user set
 * is kept as it is.
 *
 * @module
 */

import { WorkerThread } from "../../collective/worker_thread.ts";
import { ThreadWatch } from "../../util/thread_watch.ts";

/** The environment variable through which Deno's WebGPU takes its path. */
import {
  describeAdapter,
  pathInEffect,
  silenceWaylandProbe,
  WEBGPU_PATH_VARIABLE as PATH_VARIABLE,
} from "../shared/_adapter.ts";

export { describeAdapter, pathInEffect, silenceWaylandProbe };

/** What the probe worker reports: the adapter it found on its path, or null. */
export type ProbeResult = { description: string; maxBufferSize?: number } | null;

/** The path WebGPU goes through in this process, and the adapter found there. */
export interface WebGPUPath {
  /** `vulkan`, `gl`, `metal`, `dx12`, or the user's `DENO_WEBGPU_BACKEND` as given. */
  path: string;
  /** Whether the user chose it through `DENO_WEBGPU_BACKEND`, or a probe did. */
  chosenBy: "environment" | "probe";
  /** The adapter found on that path; undefined when there is none. */
  adapter?: string;
  /** The largest buffer the adapter takes (`limits.maxBufferSize`), when one was found. */
  maxBufferSize?: number;
}

/**
 * The paths tried, in order of preference, on each operating system: the one
 * that runs workers in parallel first.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PREFERRED_PATHS } from "./webgpu_path.ts";
 *
 * assert.deepEqual(PREFERRED_PATHS.linux, ["vulkan", "gl"]);
 * ```
 */
export const PREFERRED_PATHS: Readonly<Record<string, readonly string[]>> = Object.freeze({
  linux: ["vulkan", "gl"],
  darwin: ["metal"],
  windows: ["dx12", "vulkan", "gl"],
});

let chosen: Promise<WebGPUPath | undefined> | undefined;

/**
 * Chooses the WebGPU path for this process, once: `DENO_WEBGPU_BACKEND` if
 * the user set it (probed for its adapter), otherwise the first path of
 * {@linkcode PREFERRED_PATHS} on which a probe finds an adapter. The choice is written to
 * `DENO_WEBGPU_BACKEND`, so threads that start afterwards use it. Resolves
 * `undefined` when no path has an adapter, or when the environment cannot be
 * read or written (no `--allow-env`); WebGPU then picks as it would.
 *
 * @example
 * ```ts ignore
 * import { chooseWebGPUPath } from "./webgpu_path.ts";
 *
 * const choice = await chooseWebGPUPath();
 * console.log(choice?.path, choice?.adapter); // e.g. "vulkan", "llvmpipe (LLVM 15.0.6, 256 bits)"
 * ```
 */
export function chooseWebGPUPath(): Promise<WebGPUPath | undefined> {
  chosen ??= choose();
  return chosen;
}

async function choose(): Promise<WebGPUPath | undefined> {
  const access = Deno.permissions.querySync({ name: "env", variable: PATH_VARIABLE }).state;
  if (access !== "granted") return undefined; // the variable can be neither read nor set
  const given = pathInEffect();
  silenceWaylandProbe();
  if (given !== undefined) {
    const found = await probe(given);
    Deno.env.set(PATH_VARIABLE, given);
    return {
      path: given,
      chosenBy: "environment",
      adapter: found?.description,
      maxBufferSize: found?.maxBufferSize,
    };
  }
  const paths = PREFERRED_PATHS[Deno.build.os] ?? PREFERRED_PATHS.linux;
  for (const path of paths) {
    const found = await probe(path);
    if (found) {
      Deno.env.set(PATH_VARIABLE, path);
      return {
        path,
        chosenBy: "probe",
        adapter: found.description,
        maxBufferSize: found.maxBufferSize,
      };
    }
  }
  Deno.env.delete(PATH_VARIABLE);
  return undefined;
}

/** Asks for an adapter on `path` in a fresh thread; resolves once that thread has exited. */
async function probe(path: string): Promise<ProbeResult> {
  const threads = new ThreadWatch();
  Deno.env.set(PATH_VARIABLE, path);
  const thread = new WorkerThread(
    new URL("../../../workers/webgpu_probe_worker.ts", import.meta.url),
    {
      name: `webgpu-probe-${path}`,
    },
  );
  threads.add(thread);
  try {
    return await new Promise<ProbeResult>((resolve) => {
      thread.onMessage = (message) => resolve(message.result as ProbeResult);
      thread.onError = () => resolve(null);
    });
  } finally {
    threads.mark();
    thread.close();
    await threads.exited(); // see thread_watch.ts: never race a driver's teardown
  }
}

const PATH_NAMES: Readonly<Record<string, string>> = {
  vulkan: "Vulkan",
  gl: "GL",
  metal: "Metal",
  dx12: "Direct3D 12",
};

/**
 * The adapter and the path it is reached through, for start-up lines and
 * reports: `llvmpipe (LLVM 15.0.6, 256 bits) through Vulkan`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { adapterWithPath } from "./webgpu_path.ts";
 *
 * assert.equal(adapterWithPath({ adapter: "llvmpipe", path: "gl" }), "llvmpipe through GL");
 * assert.equal(adapterWithPath({ adapter: "tfjs cpu backend" }), "tfjs cpu backend");
 * ```
 */
export function adapterWithPath(device: { adapter: string; path?: string }): string {
  if (device.path === undefined) return device.adapter;
  return `${device.adapter} through ${PATH_NAMES[device.path] ?? device.path}`;
}

/**
 * Whether GPU work of several workers on `device` is serialised: a software
 * adapter (llvmpipe) reached through GL.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { serialisesWorkers } from "./webgpu_path.ts";
 *
 * assert.ok(serialisesWorkers({ software: true, path: "gl" }));
 * assert.ok(!serialisesWorkers({ software: true, path: "vulkan" }));
 * ```
 */
export function serialisesWorkers(device: { software: boolean; path?: string }): boolean {
  return device.software && device.path === "gl";
}

/**
 * The one-line warning for a run of `workers` workers on a device whose path
 * serialises them (see {@linkcode serialisesWorkers}), with the fix; undefined
 * when there is nothing to warn about.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { serialisedWorkersWarning } from "./webgpu_path.ts";
 *
 * const device = { adapter: "llvmpipe (LLVM 15.0.6, 256 bits)", software: true, path: "gl" };
 * assert.match(serialisedWorkersWarning(device, 2)!, /mesa-vulkan-drivers/);
 * assert.equal(serialisedWorkersWarning(device, 1), undefined);
 * ```
 */
export function serialisedWorkersWarning(
  device: { adapter: string; software: boolean; path?: string },
  workers: number,
): string | undefined {
  if (workers < 2 || !serialisesWorkers(device)) return undefined;
  return `warning: ${device.adapter} runs through GL, which serialises the workers' GPU work: ` +
    `${workers} workers add little or no speed over 1. Install Mesa's Vulkan driver ` +
    `(Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1, or bash .ci/setup.sh) ` +
    `and run again`;
}

/**
 * llvmpipe (Mesa's software WebGPU) starts one render thread per CPU core in
 * every worker; with several workers that oversubscribes the CPU. Unless the
 * user chose `LP_NUM_THREADS`, give each worker an equal share of the cores
 * while the workers create their devices. Returns the value the workers see
 * (undefined: llvmpipe's default) and a function that restores the
 * environment.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { shareCoresAmongWorkers } from "./webgpu_path.ts";
 *
 * const cores = shareCoresAmongWorkers(2);
 * assert.ok(cores.threads === undefined || Number(cores.threads) >= 1);
 * cores.restore();
 * ```
 */
export function shareCoresAmongWorkers(workers: number): { threads?: string; restore(): void } {
  try {
    const chosen = Deno.env.get("LP_NUM_THREADS");
    if (chosen !== undefined) return { threads: chosen, restore: () => {} };
    const share = String(Math.max(1, Math.floor(navigator.hardwareConcurrency / workers)));
    Deno.env.set("LP_NUM_THREADS", share);
    return { threads: share, restore: () => Deno.env.delete("LP_NUM_THREADS") };
  } catch {
    return { restore: () => {} }; // without --allow-env, llvmpipe's default
  }
}
