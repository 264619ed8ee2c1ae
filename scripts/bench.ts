/**
 * `deno task bench`: how training scales with workers, what the all-reduce
 * costs next to a plain memory copy, and the overhead of one worker against a
 * plain tfjs loop.
 *
 * @module
 */

import { benchAllReduce } from "../lib/bench/all_reduce_bench.ts";
import { describeMachine } from "../lib/bench/machine.ts";
import { benchWire, type WireBenchResult, wireTable } from "../lib/bench/wire_bench.ts";
import { benchElastic, elasticTable } from "../lib/bench/elastic_bench.ts";
import {
  benchOptimizers,
  type OptimizerBenchResult,
  optimizerTable,
} from "../lib/bench/optimizer_bench.ts";
import { benchKernels, type KernelResult } from "../lib/bench/kernel_bench.ts";
import {
  allReduceTable,
  checkGoals,
  kernelTable,
  machineLine,
  NIN_GRADIENT_LENGTH,
  scalingTable,
  spread,
} from "../lib/bench/report.ts";
import {
  benchBatchSweep,
  benchOverhead,
  benchScaling,
  type ScalingResult,
} from "../lib/bench/scaling_bench.ts";
import { numberFlag, outputPath, parseFlags, runCli } from "../lib/cli/cli.ts";
import { acrossProcesses, ALL_REDUCE_ALGORITHMS, BACKENDS, KERNEL_SETS } from "../internal.ts";
import { type AllReduceAlgorithm, type BackendName, type KernelSet, UsageError } from "../mod.ts";
import { PRESETS } from "../lib/train/shared/options.ts";
import { serialisedWorkersWarning } from "../lib/train/coordinator/webgpu_path.ts";
import { writeFileAtomic } from "../lib/util/atomic_write.ts";

/**
 * The kernels section's shapes: the quick preset's, with the share of its
 * batch one of `--workers 2`'s workers computes; or d2l's configuration.
 */
const KERNEL_SHAPES = {
  quick: {
    inputSize: PRESETS.quick.model.inputSize!,
    width: PRESETS.quick.model.width!,
    batch: PRESETS.quick.batchSize! / 2,
  },
  d2l: { inputSize: 224, width: 1, batch: 128 },
} as const;

const HELP = `Benchmark data-parallel NiN training, its all-reduce and its optimizer step.

Usage: deno task bench [options]

  --workers LIST          worker counts for the scaling table (default 1,2,4)
  --input-size N          model input side (default 68)
  --width X               NiN width multiplier (default 0.25)
  --batch-per-worker N    images per worker per step (default 32)
  --warmup N              untimed steps first (default 2)
  --steps N               steps per timed repetition (default 5)
  --repeats N             timed repetitions; the median is reported (default 3)
  --threads N|default     LP_NUM_THREADS per worker, i.e. llvmpipe threads (default 1)
  --backend NAME          webgpu (default) or cpu
  --allreduce NAME        all-reduce used in the scaling table: shared (default) or star
  --sizes LIST            all-reduce sizes in bytes, K and M suffixes allowed
                          (default 4K,64K,1M,16M,64M; the NiN gradient is always added)
  --allreduce-workers LIST  worker counts for the all-reduce table (default 2,4)
  --batches LIST          images per step for the batch sweep (default 1,4,16,32)
  --kernels NAME          WebGPU kernels of the scaling, overhead and batch sections:
                          fast (default) or tfjs
  --kernel-shapes NAME    shapes of the kernels section: quick (default: the quick
                          preset's, ${KERNEL_SHAPES.quick.inputSize} px, width ${KERNEL_SHAPES.quick.width}, ${KERNEL_SHAPES.quick.batch} images per worker of 2)
                          or d2l (224 px, width 1, 128 images)
  --only LIST             scaling, allreduce, overhead, batch, kernels, optimizer, wire
                          and/or elastic (default all eight; wire needs root for network
                          namespaces)
  --json FILE             also write every figure, machine and device to FILE
  --smoke                 a seconds-long run with tiny sizes (for CI)
  -h, --help              show this help
`;

const SECTIONS = [
  "scaling",
  "allreduce",
  "overhead",
  "batch",
  "kernels",
  "optimizer",
  "wire",
  "elastic",
] as const;

/** The wire section's vectors: NiN's and ResNet-18's gradients (d2l's configurations). */
const WIRE_MODELS = [
  { model: "NiN", length: NIN_GRADIENT_LENGTH },
  { model: "ResNet-18", length: 11_178_378 },
];

/** The optimizer section's sizes: the built-in models' trainable weights (d2l's configurations). */
const OPTIMIZER_SIZES = [
  { model: "NiN", length: NIN_GRADIENT_LENGTH },
  { model: "ResNet-18", length: 11_178_378 },
];

async function main(): Promise<void> {
  const { values } = parseFlags({
    options: {
      workers: { type: "string" },
      "input-size": { type: "string" },
      width: { type: "string" },
      "batch-per-worker": { type: "string" },
      warmup: { type: "string" },
      steps: { type: "string" },
      repeats: { type: "string" },
      threads: { type: "string" },
      backend: { type: "string" },
      allreduce: { type: "string" },
      sizes: { type: "string" },
      "allreduce-workers": { type: "string" },
      only: { type: "string" },
      batches: { type: "string" },
      kernels: { type: "string" },
      "kernel-shapes": { type: "string" },
      json: { type: "string" },
      smoke: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(HELP);
    return;
  }
  const smoke = values.smoke ?? false;
  const config = {
    workers: integerList("--workers", values.workers ?? (smoke ? "1,2" : "1,2,4")),
    inputSize: positive("--input-size", values["input-size"], smoke ? 67 : 68),
    width: numberFlag("--width", values.width) ?? (smoke ? 0.0625 : 0.25),
    perWorkerBatch: positive("--batch-per-worker", values["batch-per-worker"], smoke ? 2 : 32),
    warmupSteps: positive("--warmup", values.warmup, smoke ? 1 : 2),
    stepsPerRepeat: positive("--steps", values.steps, smoke ? 2 : 5),
    repeats: positive("--repeats", values.repeats, smoke ? 2 : 3),
    threads: values.threads ?? "1",
    backend: choice("--backend", values.backend ?? "webgpu", BACKENDS) as BackendName,
    allReduce: choice(
      "--allreduce",
      values.allreduce ?? "shared",
      ALL_REDUCE_ALGORITHMS.filter((name) => !acrossProcesses(name)), // one process here
    ) as AllReduceAlgorithm,
    lengths: [
      ...byteList(values.sizes ?? (smoke ? "4K,64K" : "4K,64K,1M,16M,64M")).map((b) => b / 4),
      ...(smoke ? [] : [NIN_GRADIENT_LENGTH]),
    ],
    allReduceWorkers: integerList(
      "--allreduce-workers",
      values["allreduce-workers"] ?? (smoke ? "2" : "2,4"),
    ),
    only: (values.only ?? SECTIONS.join(",")).split(",").map((s) => choice("--only", s, SECTIONS)),
    batches: integerList("--batches", values.batches ?? (smoke ? "1,2" : "1,4,16,32")),
    kernels: choice("--kernels", values.kernels ?? "fast", KERNEL_SETS) as KernelSet,
    kernelShapes: choice(
      "--kernel-shapes",
      values["kernel-shapes"] ?? "quick",
      Object.keys(KERNEL_SHAPES) as (keyof typeof KERNEL_SHAPES)[],
    ),
  };
  if (config.threads !== "default") {
    positive("--threads", config.threads, 1);
    Deno.env.set("LP_NUM_THREADS", config.threads); // every worker's device, and this thread's
  }
  const jsonPath = values.json && await outputPath("--json", values.json);

  const machine = await describeMachine(config.backend);
  console.log(`machine: ${machineLine(machine)}`);
  console.log(
    `threads: LP_NUM_THREADS=${Deno.env.get("LP_NUM_THREADS") ?? "default"} per worker` +
      (machine.device.software ? "" : " (llvmpipe only; no effect on a GPU)"),
  );
  const serialised = serialisedWorkersWarning(machine.device, Math.max(...config.workers));
  if (serialised) console.log(serialised);
  const report: Record<string, unknown> = { machine, config };

  let scaling: ScalingResult[] | undefined;
  if (config.only.includes("scaling")) {
    console.log(
      `\nScaling: NiN ${config.inputSize}×${config.inputSize}, width ${config.width}, ` +
        `${config.perWorkerBatch} images per worker, ${config.allReduce} all-reduce, synthetic data; ` +
        `images/s: median (min–max) of ${config.repeats} × ${config.stepsPerRepeat} steps after ` +
        `${config.warmupSteps} warm-up; phases (ms per step, mean over workers) from a profiled run`,
    );
    scaling = await benchScaling({
      ...config,
      onResult: (r) =>
        console.error(`  ${r.workers} worker(s): ${spread(r.imagesPerSec, 1)} images/s`),
    });
    console.log(scalingTable(scaling));
    if (serialised) console.log(serialised);
    report.scaling = scaling;
  }

  let allReduce;
  if (config.only.includes("allreduce")) {
    console.log(
      "\nAll-reduce: weighted average of a float32 vector among workers of this process; " +
        "ms per operation, median (min–max) of 5 repetitions;\n" +
        "copy = each worker copies its vector into shared memory and back (the least traffic " +
        "an all-reduce needs); move = the shared all-reduce's copies between the workers " +
        "without its arithmetic (what moving its data between cores costs here); tcp = each worker a process of a TCP process group over " +
        "loopback (the wire path; tcp-chain: its chain average, to compare); mpi = each worker " +
        "a process started by mpirun, averaging through Open MPI; shared-scalar = shared " +
        "with the scalar sum instead of WebAssembly SIMD; busbw = algbw × 2(n−1)/n",
    );
    const mpi = await hasOpenMpi();
    if (!mpi) console.log("(no mpi rows: Open MPI's mpirun was not found)");
    allReduce = await benchAllReduce({
      kinds: [
        "copy",
        "move",
        "shared",
        "shared-scalar",
        "star",
        "tcp",
        "tcp-chain",
        ...(mpi ? ["mpi" as const] : []),
      ],
      lengths: config.lengths,
      worldSizes: config.allReduceWorkers,
      repeats: smoke ? 2 : 5,
      bytesPerRepeat: smoke ? 2 ** 20 : undefined, // a few operations: the smoke run checks the path
    });
    console.log(allReduceTable(allReduce));
    report.allReduce = allReduce;
  }

  let overheadRatio: number | undefined;
  if (config.only.includes("overhead")) {
    const overhead = await benchOverhead(config);
    overheadRatio = overhead.ratio;
    const { workerStepMs, plainStepMs } = overhead;
    console.log(
      `\nOverhead: ms per step, median (min–max), the two taking turns (${config.repeats} rounds ` +
        `of ${config.stepsPerRepeat} steps): --workers 1 ${spread(workerStepMs, 1)}, a plain ` +
        `tfjs loop on the same model and batch in one thread ${spread(plainStepMs, 1)}: ` +
        `${((overheadRatio - 1) * 100).toFixed(1)}%`,
    );
    report.overhead = {
      workersOneStepMs: workerStepMs,
      plainLoopStepMs: plainStepMs,
      ratio: overheadRatio,
    };
  }

  if (config.only.includes("batch")) {
    const sweep = await benchBatchSweep({
      ...config,
      steps: config.repeats * config.stepsPerRepeat,
    });
    const perStep = sweep.points.map((p) => `${p.batch}: ${spread(p.ms, 0)}`).join(", ");
    console.log(
      `\nBatch sweep (plain tfjs loop, one thread, same model): ms per step at images per step ` +
        `${perStep}; least squares: ${sweep.fixedMs.toFixed(0)} ms per step + ` +
        `${sweep.perImageMs.toFixed(1)} ms per image`,
    );
    report.batchSweep = sweep;
  }

  let kernels: KernelResult[] | undefined;
  let stepSpeedup: number | undefined;
  if (config.only.includes("kernels") && config.backend === "webgpu") {
    const shapes = smoke
      ? { inputSize: 67, width: 0.0625, batch: 2 }
      : KERNEL_SHAPES[config.kernelShapes];
    const calls = smoke ? 2 : 9;
    console.log(
      `\nKernels: NiN's convolutions at ${shapes.inputSize} px, width ${shapes.width}, ` +
        `${shapes.batch} images; ms per call: (T(${calls} calls back to back) − T(1 call)) / ` +
        `${calls - 1}, ` +
        `each ending in a read-back, median of ${config.repeats}; matMul: tfjs matMul at the ` +
        `same GEMM size on this adapter`,
    );
    kernels = await benchKernels({
      ...shapes,
      calls,
      repeats: config.repeats,
      onResult: (r) =>
        console.error(`  ${r.layer} ${r.pass} ${r.kernels}: ${r.gflops.toFixed(2)} GFLOP/s`),
    });
    console.log(kernelTable(kernels));
    const step: Partial<Record<KernelSet, ScalingResult>> = {};
    for (const set of KERNEL_SETS) {
      [step[set]] = await benchScaling({
        ...config,
        ...shapes,
        perWorkerBatch: shapes.batch,
        workers: [1],
        kernels: set,
      });
    }
    stepSpeedup = step.fast!.imagesPerSec.median / step.tfjs!.imagesPerSec.median;
    console.log(
      `Training step (--workers 1, ${shapes.batch} images, real training path): tfjs kernels ` +
        `${spread(step.tfjs!.imagesPerSec, 1)} images/s, fast kernels ` +
        `${spread(step.fast!.imagesPerSec, 1)} images/s: ${stepSpeedup.toFixed(2)}×`,
    );
    report.kernels = { shapes, results: kernels, step, stepSpeedup };
  }

  if (config.only.includes("optimizer")) {
    const repeats = smoke ? 2 : 7;
    console.log(
      `\nOptimizer: one step on the host over flat float32 vectors, as a worker runs it after ` +
        `each all-reduce — over the whole vector (workers 1: unsharded, every worker) or over ` +
        `its chunk (sharded over 2 or 4 workers; measured in one thread); scalar JavaScript ` +
        `or WebAssembly SIMD loop (the same bits); ms per step, median (min–max) of ${repeats} ` +
        `after one untimed`,
    );
    const optimizer = benchOptimizers({
      sizes: smoke ? [{ model: "tiny", length: 65_536 }] : OPTIMIZER_SIZES,
      workers: smoke ? [1, 2] : [1, 2, 4],
      repeats,
    });
    console.log(optimizerTable(optimizer));
    report.optimizer = optimizer;
  }

  if (config.only.includes("wire")) {
    const repeats = smoke ? 2 : 3;
    console.log(
      `\nWire: the TCP process group between hosts that are network namespaces on veth cables ` +
        `shaped with tc tbf, one process (one replica) per host; ms per average, median ` +
        `(min–max) of ${repeats}; bound = bytes on the busiest cable one way ÷ its rate; ` +
        `sockets = a float32 average's bytes over plain connections (no frames, sums or copies); ` +
        `mpi = the float32 average through Open MPI (mpirun in the first host, its TCP transport)`,
    );
    try {
      const wire = await benchWire({
        links: smoke
          ? [{ gbps: 1, hosts: [2] }]
          : [{ gbps: 1, hosts: [2, 4] }, { gbps: 10, hosts: [2, 4] }],
        models: smoke ? [{ model: "tiny", length: 65_536 }] : WIRE_MODELS,
        wires: ["float32", "bf16", "sockets", ...(await hasOpenMpi() ? ["mpi" as const] : [])],
        repeats,
        onMpiFailure: (why) => console.log(`(no mpi rows: ${why})`),
      });
      console.log(wireTable(wire));
      report.wire = wire;
    } catch (error) {
      const why = error instanceof Error ? error.message : String(error);
      console.log(`not measured: ${why} (network namespaces need root)`);
      report.wire = { skipped: why };
    }
  }

  if (config.only.includes("elastic")) {
    const repeats = smoke ? 2 : 7;
    const stepsPerPhase = smoke ? 4 : 12;
    const length = smoke ? 65_536 : NIN_GRADIENT_LENGTH;
    console.log(
      `\nElastic: one gradient of ${length} values${smoke ? "" : " (NiN's)"} from a member to ` +
        `the serving process and an answer back on ` +
        `loopback, ms, median (min–max) of ${repeats}; then one elastic run (NiN ` +
        `${config.inputSize} px, width ${config.width}, 4 shards of ${config.perWorkerBatch} ` +
        `images) whose members change between epochs of ${stepsPerPhase} steps, ms per step ` +
        `after each epoch's first two; the members compute on this machine's device`,
    );
    const elastic = await benchElastic({
      length,
      repeats,
      inputSize: config.inputSize,
      width: config.width,
      batchSize: 4 * config.perWorkerBatch,
      stepsPerPhase,
    });
    console.log(elasticTable(elastic));
    report.elastic = elastic;
  }

  const goals = checkGoals({
    allReduce,
    scaling,
    overheadRatio,
    kernels,
    stepSpeedup,
    optimizer: report.optimizer as OptimizerBenchResult[] | undefined,
    wire: Array.isArray(report.wire) ? report.wire as WireBenchResult[] : undefined,
  });
  console.log("\nGoals:");
  for (const goal of goals) {
    const verdict = goal.met === undefined ? "" : goal.met ? "  met" : "  NOT met";
    console.log(`  ${goal.name}: ${goal.value} (goal ${goal.goal})${verdict}`);
  }
  report.goals = goals;
  if (jsonPath) await writeFileAtomic(jsonPath, JSON.stringify(report, null, 2) + "\n");
}

function positive(flag: string, value: string | undefined, fallback: number): number {
  const number = numberFlag(flag, value, { integer: true }) ?? fallback;
  if (number < 1) throw new UsageError(`${flag} must be a positive integer, got ${number}`);
  return number;
}

function integerList(flag: string, value: string): number[] {
  return value.split(",").map((part) => positive(flag, part, 0));
}

function byteList(value: string): number[] {
  return value.split(",").map((part) => {
    const match = part.trim().match(/^(\d+)([KM]?)$/i);
    const bytes = match
      ? Number(match[1]) * { "": 1, K: 1024, M: 2 ** 20 }[match[2].toUpperCase() as "" | "K" | "M"]
      : NaN;
    if (!(bytes >= 4) || bytes % 4 !== 0) {
      throw new UsageError(`--sizes takes byte counts divisible by 4 (e.g. 4K,1M), got "${part}"`);
    }
    return bytes;
  });
}

function choice<T extends string>(flag: string, value: string, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) {
    throw new UsageError(`${flag} must be one of ${allowed.join(", ")}, got "${value}"`);
  }
  return value as T;
}

if (import.meta.main) await runCli(main);

/** Whether Open MPI's mpirun runs here (the all-reduce table's mpi rows need it). */
async function hasOpenMpi(): Promise<boolean> {
  const probe = await new Deno.Command("mpirun", {
    args: ["--version"],
    stdout: "piped",
    stderr: "null",
  })
    .output().catch(() => undefined);
  return probe?.success === true && new TextDecoder().decode(probe.stdout).includes("Open MPI");
}
