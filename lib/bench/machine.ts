/**
 * A description of the machine a benchmark ran on, for its report.
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { type BackendName, type DeviceInfo, initBackend } from "../train/shared/backend.ts";
import { chooseWebGPUPath } from "../train/coordinator/webgpu_path.ts";

/** What a benchmark report says about the machine. */
export interface MachineInfo {
  /** CPU model, from `lscpu` where it runs. */
  cpu: string;
  /** Logical cores (`navigator.hardwareConcurrency`). */
  cores: number;
  /** Total memory in GiB, where readable. */
  memoryGiB: number | undefined;
  /** Operating system and architecture. */
  os: string;
  /** Deno and V8 versions. */
  deno: string;
  /** TensorFlow.js version. */
  tfjs: string;
  /** The device the backend runs on, as this thread sees it. */
  device: DeviceInfo;
  /**
   * The commit measured (`git rev-parse --short HEAD`, with `-dirty` when the
   * working tree differs from it), or "unknown" outside a git checkout.
   */
  commit: string;
  /** When the measurement started, ISO 8601. */
  date: string;
}

/**
 * Describes this machine and the device `backend` runs on.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { describeMachine } from "./machine.ts";
 *
 * const machine = await describeMachine("cpu");
 * assert.ok(machine.cores >= 1 && machine.device.backend === "cpu");
 * ```
 */
export async function describeMachine(backend: BackendName): Promise<MachineInfo> {
  let cpu = "unknown CPU";
  try {
    // /proc/cpuinfo needs --allow-all in Deno; lscpu needs only --allow-run=lscpu.
    const { stdout } = await new Deno.Command("lscpu", { stdout: "piped", stderr: "null" })
      .output();
    cpu = new TextDecoder().decode(stdout).match(/^Model name:\s*(.+)$/m)?.[1]?.trim() ?? cpu;
  } catch {
    // not Linux, or no permission to run lscpu
  }
  if (backend === "webgpu") await chooseWebGPUPath(); // the path the workers will take
  let memoryGiB: number | undefined;
  try {
    memoryGiB = Math.round(Deno.systemMemoryInfo().total / 2 ** 30);
  } catch {
    memoryGiB = undefined;
  }
  return {
    commit: await gitCommit(),
    date: new Date().toISOString(),
    cpu,
    cores: navigator.hardwareConcurrency,
    memoryGiB,
    os: `${Deno.build.os} ${Deno.build.arch}`,
    deno: `Deno ${Deno.version.deno}, V8 ${Deno.version.v8}`,
    tfjs: tf.version_core,
    device: await initBackend(backend),
  };
}

/** `git rev-parse --short HEAD`, `-dirty` when the tree has changes; "unknown" without git. */
async function gitCommit(): Promise<string> {
  const git = async (...args: string[]) => {
    const { success, stdout } = await new Deno.Command("git", {
      args,
      stdout: "piped",
      stderr: "null",
    }).output();
    if (!success) throw new Error(`git ${args[0]} failed`);
    return new TextDecoder().decode(stdout).trim();
  };
  try {
    const head = await git("rev-parse", "--short", "HEAD");
    const dirty = (await git("status", "--porcelain", "--untracked-files=no")) !== "";
    return dirty ? `${head}-dirty` : head;
  } catch {
    return "unknown"; // no git, or no permission to run it
  }
}
