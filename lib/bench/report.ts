/**
 * Plain-text tables and goal checks for `deno task bench`.
 *
 * @module
 */

import type { AllReduceBenchResult } from "./all_reduce_bench.ts";
import type { KernelResult } from "./kernel_bench.ts";
import type { MachineInfo } from "./machine.ts";
import type { OptimizerBenchResult } from "./optimizer_bench.ts";
import type { WireBenchResult } from "./wire_bench.ts";
import type { ScalingResult } from "./scaling_bench.ts";
import type { Summary } from "./stats.ts";
import { adapterWithPath } from "../train/coordinator/webgpu_path.ts";

/**
 * Number of float32 values in d2l's NiN gradient.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NIN_GRADIENT_LENGTH } from "./report.ts";
 *
 * assert.equal(NIN_GRADIENT_LENGTH * 4, 7_968_664); // bytes
 * ```
 */
export const NIN_GRADIENT_LENGTH = 1_992_166;

/**
 * Lays out rows as a table with aligned columns (first column left-aligned,
 * the rest right-aligned).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { table } from "./report.ts";
 *
 * assert.equal(table([["a", "bb"], ["ccc", "d"]]), "a    bb\nccc   d");
 * ```
 */
export function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  return rows.map((row) =>
    row.map((cell, c) => c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c])).join("  ")
      .trimEnd()
  ).join("\n");
}

/**
 * `median (min–max)` with `digits` decimals.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { spread } from "./report.ts";
 *
 * assert.equal(spread({ median: 2, min: 1.5, max: 3, count: 3 }, 1), "2.0 (1.5–3.0)");
 * ```
 */
export function spread(summary: Summary, digits: number): string {
  const f = (x: number) => x.toFixed(digits);
  return `${f(summary.median)} (${f(summary.min)}–${f(summary.max)})`;
}

/**
 * A byte count for humans: `4 KiB`, `7.97 MB (NiN)`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatBytes } from "./report.ts";
 *
 * assert.equal(formatBytes(4096), "4 KiB");
 * assert.equal(formatBytes(64 * 2 ** 20), "64 MiB");
 * assert.equal(formatBytes(4 * 1_992_166), "7.97 MB (NiN)");
 * ```
 */
export function formatBytes(bytes: number): string {
  if (bytes === 4 * NIN_GRADIENT_LENGTH) return `${(bytes / 1e6).toFixed(2)} MB (NiN)`;
  for (const [unit, size] of [["MiB", 2 ** 20], ["KiB", 2 ** 10]] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size} ${unit}`;
  }
  return `${bytes} B`;
}

/**
 * The scaling table: throughput, speed-up, efficiency and the step phases.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { scalingTable } from "./report.ts";
 *
 * const summary = { median: 14, min: 13.5, max: 14.2, count: 3 };
 * const phases = { computeMs: 2000, readbackMs: 5, allReduceMs: 0, waitMs: 0, optimizerMs: 20 };
 * const text = scalingTable([{
 *   workers: 1, batchSize: 32, imagesPerSec: summary, stepMs: { ...summary, median: 2280 },
 *   speedup: 1, efficiency: 1, breakdown: phases,
 * }]);
 * assert.match(text.split("\n")[1], /^1\s+32\s+14\.0 \(13\.5–14\.2\)\s+1\.00×\s+100%\s+2280\s+2000/);
 * ```
 */
export function scalingTable(results: readonly ScalingResult[]): string {
  const rows = [[
    "workers",
    "batch",
    "images/s (min–max)",
    "speed-up",
    "efficiency",
    "step ms",
    "compute",
    "read-back",
    "all-reduce",
    "wait",
    "optimizer",
  ]];
  for (const r of results) {
    const b = r.breakdown;
    rows.push([
      String(r.workers),
      String(r.batchSize),
      spread(r.imagesPerSec, 1),
      `${r.speedup.toFixed(2)}×`,
      `${(r.efficiency * 100).toFixed(0)}%`,
      r.stepMs.median.toFixed(0),
      b.computeMs.toFixed(0),
      b.readbackMs.toFixed(1),
      b.allReduceMs.toFixed(1),
      b.waitMs.toFixed(1),
      b.optimizerMs.toFixed(1),
    ]);
  }
  return table(rows);
}

/**
 * The all-reduce table, with each algorithm's time relative to the copy baseline.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { allReduceTable } from "./report.ts";
 *
 * const row = (kind: "copy" | "shared", median: number) => ({
 *   kind, worldSize: 2, length: 1024, bytes: 4096, opsPerRepeat: 100,
 *   ms: { median, min: median, max: median, count: 5 }, algbwGBps: 4096 / (median * 1e6),
 *   busbwGBps: 4096 / (median * 1e6),
 * });
 * const text = allReduceTable([row("copy", 0.001), row("shared", 0.002)]);
 * assert.match(text, /4 KiB\s+2\s+shared\s+0\.002 \(0\.002–0\.002\)\s+2\.05\s+2\.05\s+2\.00/);
 * ```
 */
export function allReduceTable(results: readonly AllReduceBenchResult[]): string {
  const rows = [[
    "size",
    "workers",
    "algorithm",
    "ms (min–max)",
    "algbw GB/s",
    "busbw GB/s",
    "÷ copy",
  ]];
  for (const r of results) {
    const copy = results.find((c) =>
      c.kind === "copy" && c.length === r.length && c.worldSize === r.worldSize
    );
    rows.push([
      formatBytes(r.bytes),
      String(r.worldSize),
      r.kind,
      spread(r.ms, r.ms.median < 1 ? 3 : 2),
      r.algbwGBps.toFixed(2),
      r.busbwGBps.toFixed(2),
      copy ? (r.ms.median / copy.ms.median).toFixed(2) : "",
    ]);
  }
  return table(rows);
}

/**
 * The kernel table: per layer and pass, tfjs's kernel and this library's in
 * ms and GFLOP/s, the speed-up, and the share of tfjs `matMul`'s GFLOP/s at
 * the same GEMM size.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { kernelTable } from "./report.ts";
 *
 * const ms = (median: number) => ({ median, min: median, max: median, count: 1 });
 * const row = { layer: "nin1_conv", shape: "16×67×67×1 * 11×11×1×12 /4", pass: "forward" as const, matMulGflops: 2 };
 * const text = kernelTable([
 *   { ...row, kernels: "tfjs", ms: ms(100), gflops: 0.1 },
 *   { ...row, kernels: "fast", ms: ms(5), gflops: 2 },
 * ]);
 * assert.match(text.split("\n")[1], /^nin1_conv\s+forward .* 100\.0\s+0\.10\s+5\.0\s+2\.00\s+20\.0×\s+2\.00\s+100%$/);
 * ```
 */
export function kernelTable(results: readonly KernelResult[]): string {
  const rows: string[][] = [[
    "layer",
    "pass",
    "shape (x * W /stride)",
    "tfjs ms",
    "GFLOP/s",
    "fast ms",
    "GFLOP/s",
    "speed-up",
    "matMul GFLOP/s",
    "fast ÷ matMul",
  ]];
  for (const fast of results.filter((r) => r.kernels === "fast")) {
    const tfjs = results.find((r) =>
      r.kernels === "tfjs" && r.layer === fast.layer && r.pass === fast.pass
    );
    if (tfjs === undefined) continue;
    rows.push([
      fast.layer,
      fast.pass,
      fast.shape,
      tfjs.ms.median.toFixed(1),
      tfjs.gflops.toFixed(2),
      fast.ms.median.toFixed(1),
      fast.gflops.toFixed(2),
      `${(tfjs.ms.median / fast.ms.median).toFixed(1)}×`,
      fast.matMulGflops.toFixed(2),
      `${Math.round((100 * fast.gflops) / fast.matMulGflops)}%`,
    ]);
  }
  return table(rows);
}

/**
 * One line about the machine and the device.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { machineLine } from "./report.ts";
 *
 * const line = machineLine({
 *   cpu: "AMD EPYC", cores: 2, memoryGiB: 24, os: "linux x86_64", deno: "Deno 2.9.6", tfjs: "4.22.0",
 *   device: { backend: "webgpu", adapter: "llvmpipe", software: true, path: "vulkan" },
 *   commit: "670a3c1", date: "2026-12-05T12:00:00.000Z",
 * });
 * assert.equal(line, "AMD EPYC (2 cores, 24 GiB), linux x86_64, Deno 2.9.6, tfjs 4.22.0; webgpu on llvmpipe through Vulkan (software adapter); commit 670a3c1, 2026-12-05");
 * ```
 */
export function machineLine(machine: MachineInfo): string {
  const memory = machine.memoryGiB === undefined ? "" : `, ${machine.memoryGiB} GiB`;
  const kind = machine.device.software ? "software adapter" : "hardware adapter";
  return `${machine.cpu} (${machine.cores} cores${memory}), ${machine.os}, ${machine.deno}, ` +
    `tfjs ${machine.tfjs}; ${machine.device.backend} on ${
      adapterWithPath(machine.device)
    } (${kind}); commit ${machine.commit}, ${machine.date.slice(0, 10)}`;
}

/** A goal of the benchmark and whether this run met it. */
export interface GoalCheck {
  /** What is measured. */
  name: string;
  /** The measured value, as text. */
  value: string;
  /** The goal, as text. */
  goal: string;
  /** Whether the measurement meets the goal; undefined when it was not measured. */
  met: boolean | undefined;
}

/**
 * Checks the benchmark's goals against the measurements available.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkGoals } from "./report.ts";
 *
 * const goals = checkGoals({ overheadRatio: 1.03 });
 * assert.equal(goals.find((g) => g.name.includes("overhead"))?.met, true);
 * assert.equal(goals.find((g) => g.name.includes("speed-up"))?.met, undefined);
 *
 * // The shared all-reduce beside the copy baseline, and moving its data alone beside it too.
 * const row = (kind: "copy" | "move" | "shared", median: number) => ({
 *   kind, worldSize: 2, length: 1_992_166, bytes: 7_968_664, opsPerRepeat: 8,
 *   ms: { median, min: median, max: median, count: 5 }, algbwGBps: 1, busbwGBps: 1,
 * });
 * const allReduce = [row("copy", 0.5), row("move", 1.4), row("shared", 1.5)];
 * const shared = checkGoals({ allReduce }).find((g) => g.name.startsWith("2-worker shared"));
 * assert.equal(shared?.value, "3.00× (moving its data alone: 2.80×)");
 * assert.equal(shared?.met, false);
 * ```
 */
export function checkGoals(measured: {
  allReduce?: readonly AllReduceBenchResult[];
  scaling?: readonly ScalingResult[];
  overheadRatio?: number;
  kernels?: readonly KernelResult[];
  stepSpeedup?: number;
  optimizer?: readonly OptimizerBenchResult[];
  wire?: readonly WireBenchResult[];
}): GoalCheck[] {
  const fast = measured.kernels?.filter((r) => r.kernels === "fast") ?? [];
  const worst = fast.length === 0
    ? undefined
    : fast.reduce((a, b) => (a.gflops / a.matMulGflops <= b.gflops / b.matMulGflops ? a : b));
  const worstShare = worst && worst.gflops / worst.matMulGflops;
  const find = (kind: string, worldSize: number) =>
    measured.allReduce?.find((r) =>
      r.kind === kind && r.worldSize === worldSize && r.length === NIN_GRADIENT_LENGTH
    );
  const ratioAt = (kind: string, worldSize: number) => {
    const [row, copy] = [find(kind, worldSize), find("copy", worldSize)];
    return row && copy ? row.ms.median / copy.ms.median : undefined;
  };
  const sharedGoal = (worldSize: number): GoalCheck => {
    const [ratio, move] = [ratioAt("shared", worldSize), ratioAt("move", worldSize)];
    // What moving the same data between the workers costs on this machine: its floor.
    const floor = move === undefined ? "" : ` (moving its data alone: ${move.toFixed(2)}×)`;
    return {
      name: `${worldSize}-worker shared all-reduce of the NiN gradient, ÷ copy baseline`,
      value: ratio === undefined ? "not measured" : `${ratio.toFixed(2)}×${floor}`,
      goal: "≤ 2×",
      met: ratio === undefined ? undefined : ratio <= 2,
    };
  };
  const update = (optimizer: string, goalMs: number): GoalCheck => {
    const row = measured.optimizer?.find((r) =>
      r.optimizer === optimizer && r.model === "ResNet-18" && r.workers === 4 && r.loop === "simd"
    );
    return {
      name: `${optimizer} on ResNet-18, per worker with 4 workers (sharded, SIMD)`,
      value: row === undefined ? "not measured" : `${row.ms.median.toFixed(2)} ms`,
      goal: `≤ ${goalMs} ms`,
      met: row === undefined ? undefined : row.ms.median <= goalMs,
    };
  };
  const one = measured.scaling?.find((r) => r.workers === 1);
  const two = measured.scaling?.find((r) => r.workers === 2);
  const speedup = one && two ? two.imagesPerSec.median / one.imagesPerSec.median : undefined;
  const overhead = measured.overheadRatio;
  return [
    sharedGoal(4),
    sharedGoal(2),
    update("Adam", 10),
    update("SGD + momentum", 3),
    wireGoal(measured.wire, { gbps: 1, hosts: 2, share: 0.8 }),
    wireGoal(measured.wire, { gbps: 1, hosts: 4, share: 0.8 }),
    wireGoal(measured.wire, { gbps: 10, hosts: 2, share: 0.5 }),
    bf16Goal(measured.wire),
    {
      name: "--workers 1 overhead over a plain tfjs loop",
      value: overhead === undefined ? "not measured" : `${((overhead - 1) * 100).toFixed(1)}%`,
      goal: "≤ 5%",
      met: overhead === undefined ? undefined : overhead <= 1.05,
    },
    {
      name: "2-worker speed-up",
      value: speedup === undefined ? "not measured" : `${speedup.toFixed(2)}×`,
      goal: "≥ 1.60× (PyTorch DDP, NiN 68 px, width ¼, 32 images per worker, 1 thread each)",
      met: speedup === undefined ? undefined : speedup >= 1.6,
    },
    {
      name: "training step, fast kernels ÷ tfjs's (quick preset's shapes)",
      value: measured.stepSpeedup === undefined
        ? "not measured"
        : `${measured.stepSpeedup.toFixed(2)}×`,
      goal: "≥ 5×",
      met: measured.stepSpeedup === undefined ? undefined : measured.stepSpeedup >= 5,
    },
    {
      name: "slowest fast conv kernel ÷ tfjs matMul's GFLOP/s at its size",
      value: worstShare === undefined
        ? "not measured"
        : `${Math.round(100 * worstShare)}% (${worst!.layer} ${worst!.pass})`,
      goal: "≥ 50%",
      met: worstShare === undefined ? undefined : worstShare >= 0.5,
    },
  ];
}

/** The NiN average's share of the wire bound at `gbps` among `hosts`, against `share`. */
function wireGoal(
  wire: readonly WireBenchResult[] | undefined,
  goal: { gbps: number; hosts: number; share: number },
): GoalCheck {
  const find = (format: string) =>
    wire?.find((r) =>
      r.gbps === goal.gbps && r.hosts === goal.hosts && r.length === NIN_GRADIENT_LENGTH &&
      r.wire === format
    );
  const [row, sockets] = [find("float32"), find("sockets")];
  // What plain sockets reach with the same bytes on the same links: this machine's ceiling.
  const ceiling = sockets ? ` (plain sockets: ${Math.round(100 * sockets.ofBound)}%)` : "";
  return {
    name:
      `TCP average of the NiN gradient, ${goal.hosts} hosts at ${goal.gbps} Gbit/s, of the wire bound`,
    value: row === undefined ? "not measured" : `${Math.round(100 * row.ofBound)}%${ceiling}`,
    goal: `≥ ${Math.round(100 * goal.share)}%`,
    met: row === undefined ? undefined : row.ofBound >= goal.share,
  };
}

/** How much faster the NiN average is as bfloat16 than as float32, 2 hosts at 1 Gbit/s. */
function bf16Goal(wire: readonly WireBenchResult[] | undefined): GoalCheck {
  const find = (format: string) =>
    wire?.find((r) =>
      r.gbps === 1 && r.hosts === 2 && r.length === NIN_GRADIENT_LENGTH && r.wire === format
    );
  const [f32, bf16] = [find("float32"), find("bf16")];
  const speedup = f32 && bf16 ? f32.ms.median / bf16.ms.median : undefined;
  return {
    name: "--wire bf16 ÷ float32, NiN average, 2 hosts at 1 Gbit/s",
    value: speedup === undefined ? "not measured" : `${speedup.toFixed(2)}× faster`,
    goal: "≥ 1.8×",
    met: speedup === undefined ? undefined : speedup >= 1.8,
  };
}
