/**
 * Helpers of the tests that train as several processes (TCP, MPI): a small
 * run's flags, the one-process reference run, and comparisons with it.
 *
 * @module
 */

import assert from "node:assert/strict";
import { runScript, writeTinyDataset } from "./helpers.ts";
import { sha256Hex } from "../lib/util/sha256.ts";

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
