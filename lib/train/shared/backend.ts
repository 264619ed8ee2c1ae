/**
 * Choosing the TensorFlow.js backend and describing the device it runs on.
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
import "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";
import { describeValue, UsageError } from "../../errors.ts";
import { type KernelSet, useKernels } from "../../kernels/mod.ts";
import { describeAdapter, pathInEffect, silenceWaylandProbe } from "./_adapter.ts";

/** The TensorFlow.js backends the library trains on. */
export type BackendName = "webgpu" | "cpu";

/**
 * The backends accepted by {@linkcode initBackend}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BACKENDS } from "./backend.ts";
 *
 * assert.deepEqual([...BACKENDS], ["webgpu", "cpu"]);
 * ```
 */
export const BACKENDS: readonly BackendName[] = ["webgpu", "cpu"];

/** What {@linkcode initBackend} found. */
export interface DeviceInfo {
  /** The backend in use. */
  backend: BackendName;
  /** The adapter's description as WebGPU reports it (e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`), or the CPU backend's name. */
  adapter: string;
  /** True on a software rasteriser (llvmpipe, lavapipe, SwiftShader) or the CPU backend. */
  software: boolean;
  /** The WebGPU kernel set in use; undefined on the CPU backend. */
  kernels?: KernelSet;
  /**
   * The graphics API WebGPU goes through (`vulkan`, `gl`, …) as
   * `DENO_WEBGPU_BACKEND` named it when this thread asked for its adapter;
   * undefined when it was not set (WebGPU's own pick) and on the CPU backend.
   * See `chooseWebGPUPath`.
   */
  path?: string;
}

/**
 * Makes `backend` the active TensorFlow.js backend in this thread; on
 * `webgpu`, with the kernel set `options.kernels` (default `"fast"`, see
 * `useKernels`).
 *
 * Throws an error saying how to get a WebGPU adapter when none is found.
 *
 * @example
 * ```ts ignore
 * import { initBackend } from "./backend.ts";
 *
 * const device = await initBackend("webgpu");
 * console.log(device.adapter, device.software ? "(software)" : "");
 * ```
 */
export async function initBackend(
  backend: BackendName,
  options: { kernels?: KernelSet } = {},
): Promise<DeviceInfo> {
  if (backend === "cpu") {
    await setBackend("cpu");
    return { backend, adapter: "tfjs cpu backend (JavaScript)", software: true };
  }
  if (backend !== "webgpu") {
    throw new UsageError(
      `backend must be one of ${BACKENDS.join(", ")}, got ${describeValue(backend)}`,
    );
  }
  silenceWaylandProbe();
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) {
    throw new Error(
      "no WebGPU adapter found: install a GPU driver or Mesa's software drivers " +
        "(Debian: apt-get install mesa-vulkan-drivers libvulkan1), or use --backend cpu",
    );
  }
  const description = describeAdapter(adapter.info);
  await setBackend("webgpu");
  const kernels = options.kernels ?? "fast";
  useKernels(kernels);
  return {
    kernels,
    backend,
    adapter: description,
    software: isSoftwareAdapter(description),
    path: pathInEffect(),
  };
}

/**
 * Whether an adapter description names a software rasteriser.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isSoftwareAdapter } from "./backend.ts";
 *
 * assert.ok(isSoftwareAdapter("llvmpipe (LLVM 15.0.6, 256 bits)"));
 * assert.ok(!isSoftwareAdapter("NVIDIA H100 80GB HBM3"));
 * ```
 */
export function isSoftwareAdapter(description: string): boolean {
  return /llvmpipe|lavapipe|softpipe|swiftshader|software|cpu/i.test(description);
}

async function setBackend(name: BackendName): Promise<void> {
  // Production mode: no debug checks, and no advertisement for tfjs-node on stderr.
  tf.env().set("PROD", true);
  if (!(await tf.setBackend(name))) {
    throw new Error(`TensorFlow.js could not initialise its ${name} backend`);
  }
  await tf.ready();
}
