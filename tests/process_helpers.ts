/**
 * Helpers of the tests that train as several processes (TCP, MPI): a small
 * run's flags, the one-process reference run, and comparisons with it.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ROOT, runScript, scriptEnv, writeTinyDataset } from "./helpers.ts";
import { sha256Hex } from "../lib/util/sha256.ts";
import { listCheckpoints } from "../lib/train/shared/checkpoint.ts";
import type { TcpProcessGroupOptions } from "../lib/train/shared/options.ts";

/** Flags of a small run on the tiny data set in `dir`. */
export function runFlags(dir: string, extra: string[] = []): string[] {
  return [
    "--preset=quick",
    "--width=0.125",
    `--data-dir=${dir}`,
    "--no-download",
    "--batch-size=8",
    "--epochs=2",
    ...extra,
  ];
}

export async function fileSha(path: string): Promise<string> {
  return await sha256Hex(await Deno.readFile(path));
}

/**
 * The reference: one process with `flags` on a fresh tiny data set in `dir`,
 * exporting to `dir/single`; it must succeed.
 */
export async function singleProcessRun(dir: string, flags: string[], flagsOf = runFlags) {
  await writeTinyDataset(dir, { train: 48, test: 16 });
  const single = await runScript(
    "scripts/train.ts",
    flagsOf(dir, [...flags, `--export=${dir}/single`]),
    { env: { LP_NUM_THREADS: "1" } },
  );
  assert.equal(single.code, 0, single.stderr);
  return single;
}

/** Asserts that the several processes' export (`dir/multi`) has the reference's weights, bit for bit. */
export async function assertReferenceWeights(dir: string): Promise<void> {
  assert.equal(
    await fileSha(`${dir}/multi/group1-shard1of1.bin`),
    await fileSha(`${dir}/single/group1-shard1of1.bin`),
  );
}

/** The epoch lines of a run's output. */
export function epochLines(stdout: string): string[] {
  return stdout.split("\n").filter((line) => /^epoch \d/.test(line))
    .map((line) => line.replace(/, [\d.]+ examples\/sec.*$/, "")); // timings differ
}

/**
 * The pid of the Deno process with `marker` in its arguments and `variable`
 * (`NAME=value`) in its environment, once there is one. Read through `ps`
 * (its `e` option appends every process's environment to its command line):
 * Deno lets only --allow-all read /proc.
 */
export async function pidOf(marker: string, variable: string): Promise<number> {
  for (let tries = 0; tries < 600; tries++) {
    const { stdout } = await new Deno.Command("ps", {
      args: ["-e", "-ww", "-o", "pid=,args=", "e"],
      stdout: "piped",
      stderr: "null",
    }).output();
    for (const line of new TextDecoder().decode(stdout).split("\n")) {
      const [pid, program, ...rest] = line.trim().split(" ");
      if (program === Deno.execPath() && line.includes(marker) && rest.includes(variable)) {
        return Number(pid);
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no process with ${variable} started with ${marker}`);
}

/** Resolves once `dir` holds a checkpoint. */
export async function checkpointed(dir: string): Promise<void> {
  for (let tries = 0; tries < 1200; tries++) {
    if ((await listCheckpoints(dir).catch(() => [])).length > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no checkpoint appeared in ${dir}`);
}

/**
 * `program` with `args` started in the root directory with the tests'
 * environment (one llvmpipe thread per worker); `output` resolves with its
 * exit code and output. A guard kills it after 180 s: a job that never ends
 * fails the test instead of hanging it.
 */
export function spawnGuarded(program: string, args: readonly string[]) {
  const child = new Deno.Command(program, {
    args: [...args],
    cwd: ROOT,
    clearEnv: true,
    env: { ...scriptEnv(), LP_NUM_THREADS: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const guard = setTimeout(() => child.kill("SIGKILL"), 180_000);
  const output = child.output().then(({ code, stdout, stderr }) => {
    clearTimeout(guard);
    const decoder = new TextDecoder();
    return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
  });
  return { child, output };
}

/**
 * The process-group options of each rank of a TCP job of `size` processes
 * run in this one on 127.0.0.1: rank 0 listens on a port of its own choice,
 * and the others' options resolve once it does.
 */
export function loopbackGroup(
  size: number,
  token: string,
): (rank: number) => Promise<TcpProcessGroupOptions> {
  const listening = Promise.withResolvers<number>();
  return async (rank) => ({
    rank,
    size,
    masterAddr: "127.0.0.1",
    masterPort: rank === 0 ? 0 : await listening.promise, // rank 0 picks a free port
    onListening: listening.resolve,
    token,
  });
}
