/**
 * Worker entry point: asks WebGPU for an adapter once and posts what it
 * found. Started by `chooseWebGPUPath()` (a `WorkerThread`) with
 * `DENO_WEBGPU_BACKEND` set to the path under test: Deno reads that variable
 * once per thread, when the thread first asks for an adapter, so each path is
 * tried in a fresh thread.
 *
 * @module
 */

import { parentChannel } from "../lib/collective/worker_thread.ts";
import { describeAdapter, type ProbeResult } from "../lib/train/coordinator/webgpu_path.ts";

let result: ProbeResult = null;
try {
  const adapter = await navigator.gpu?.requestAdapter();
  if (adapter) {
    result = {
      description: describeAdapter(adapter.info),
      maxBufferSize: adapter.limits.maxBufferSize,
    };
  }
} catch {
  result = null; // this path has no usable adapter
}
parentChannel({ label: "WebGPU probe" }).send({ type: "probe", result });
