/**
 * `deno task train`: data-parallel NiN on Fashion-MNIST from the command line.
 *
 * @module
 */

import { type EpochRecord, train, type TrainOptions, type TrainStart, UsageError } from "../mod.ts";
import { resolveTrainOptions } from "../internal.ts";
import { launchInfo } from "../lib/collective/tcp/launch_env.ts";
import {
  formatDuration,
  formatEpoch,
  formatMetrics,
  historyToJsonl,
  longRunAdvice,
  workersAdvice,
} from "../lib/train/coordinator/report.ts";
import { renderHistorySvg } from "../lib/train/coordinator/plot.ts";
import { adapterWithPath, serialisedWorkersWarning } from "../lib/train/coordinator/webgpu_path.ts";
import { initBackend, stageSummary } from "../model.ts";
import { trainableParams } from "../lib/model/nin.ts";
import { buildModel, type ModelConfig } from "../lib/model/registry.ts";
import { exportLayersModel } from "../lib/model/export.ts";
import { probeWritable, writeFileAtomic } from "../lib/util/atomic_write.ts";
import { numberFlag, outputPath, parseFlags, runCli, statOrNull } from "../lib/cli/cli.ts";
import { TRAIN_FLAGS, TRAIN_FLAGS_HELP, trainOptionsFromFlags } from "../lib/cli/train_flags.ts";
import { ProgressBar } from "../lib/util/progress.ts";
import { joinRun, memberUrl } from "../lib/train/coordinator/join.ts";
import type { MemberEvent } from "../mod.ts";

const DATASET_TITLES = { "fashion-mnist": "Fashion-MNIST", cifar10: "CIFAR-10" } as const;

const HELP =
  `Train d2l's Network in Network (or LeNet, ResNet-18, or your own model) on Fashion-MNIST (or
CIFAR-10), data-parallel across worker threads on WebGPU.

Usage: deno task train [options]

${TRAIN_FLAGS_HELP}
  --nnodes N         processes in the job (one per host, each with --workers replicas);
                     torchrun's, Slurm's or Open MPI's variables say the same
  --node-rank R      this process's rank (0: rendezvous, checkpoints and outputs)
  --master-addr HOST rank 0's address (or MASTER_ADDR; rank 0 listens there)
  --master-port P    rank 0's port (or MASTER_PORT; default 29500)
  --token-file FILE  the job's shared secret (or DDP_TOKEN), at least 16 characters
  --peer-timeout S   a process silent for S seconds is presumed dead (default 60)
  --metrics FILE     write one JSON object per epoch (JSON Lines)
  --plot FILE        draw train loss, train acc and test acc per epoch as SVG
  --export DIR       save the trained model in TensorFlow.js LayersModel format
                     (model.json + weights), for tf.loadLayersModel and deno task eval
  --summary          print each layer's output shape and parameter count, then exit
  --join HOST:PORT   instead of training a run of its own: join the elastic run served
                     there (--serve HOST:PORT --elastic) as a member, with the job's token
                     (DDP_TOKEN or --token-file); Ctrl-C leaves it, and it goes on
  -h, --help         show this help
`;

async function main(): Promise<void> {
  const { values } = parseFlags({
    args: withOptionalValue(Deno.args, "--resume"),
    options: {
      ...TRAIN_FLAGS,
      metrics: { type: "string" },
      plot: { type: "string" },
      export: { type: "string" },
      summary: { type: "boolean" },
      help: { type: "boolean", short: "h" },
      nnodes: { type: "string" },
      "node-rank": { type: "string" },
      "master-addr": { type: "string" },
      "master-port": { type: "string" },
      "token-file": { type: "string" },
      "peer-timeout": { type: "string" },
      join: { type: "string" },
    },
  });
  if (values.help) {
    console.log(HELP);
    return;
  }
  if (values.join !== undefined) return await joinFromCli(values);
  // Under MPI, rank and size are MPI's: a launcher's variables (mpirun's OMPI_*) are not read.
  const mpi = values.allreduce === "mpi";
  const placed = ["nnodes", "node-rank", "master-addr", "master-port", "token-file"] as const;
  const misplaced = placed.find((name) => values[name] !== undefined);
  if (mpi && misplaced) {
    throw new UsageError(
      `--${misplaced} does not go with --allreduce mpi: MPI gives each process its rank (start the processes with mpirun or srun)`,
    );
  }
  const launch = mpi ? undefined : launchInfo({
    nnodes: values.nnodes,
    nodeRank: values["node-rank"],
    masterAddr: values["master-addr"],
    masterPort: values["master-port"],
  }, Deno.env.toObject());
  const flags = trainOptionsFromFlags(values);
  const options: TrainOptions = {
    ...flags,
    serve: flags.serve && {
      ...flags.serve,
      elastic: flags.serve.elastic && {
        ...(flags.serve.elastic === true ? {} : flags.serve.elastic),
        onMember: (event: MemberEvent) => {
          const line = memberLine(event);
          if (line) console.error(line);
        },
      },
      onListening: (url: string) => console.error(`dashboard: ${url}`),
    },
    distributed: {
      ...flags.distributed,
      processGroup: mpi ? { backend: "mpi" } : launch && {
        rank: launch.rank,
        size: launch.worldSize,
        masterAddr: launch.masterAddr,
        masterPort: launch.masterPort,
        tokenFile: values["token-file"],
        peerTimeout: numberFlag("--peer-timeout", values["peer-timeout"]),
        onNotice: (line: string) => console.error(`rank ${launch.rank} ${line}`),
        onListening: (port: number) =>
          console.error(
            `rank 0: waiting for ${
              launch.worldSize - 1
            } process(es) at ${launch.masterAddr}:${port}`,
          ),
      },
    },
  };
  const resolved = resolveTrainOptions(options); // usage errors before any work
  if (values.summary) {
    await printSummary(resolved.model);
    return;
  }
  // In a job of several processes, rank 0 writes the outputs (as it writes the checkpoints).
  const writes = (resolved.distributed.processGroup?.rank ?? 0) === 0;
  const metricsPath = writes && values.metrics && await outputPath("--metrics", values.metrics);
  const plotPath = writes && values.plot && await outputPath("--plot", values.plot);
  const exportDir = writes && values.export && await exportPath(values.export);

  const history: EpochRecord[] = [];
  let run = resolved; // a resumed run takes its settings from the checkpoint
  let bar: ProgressBar | null = null;
  let evalBar: ProgressBar | null = null;
  let etaShown = false;
  let firstStepSeconds = 0;
  let software = false;
  // Ctrl-C (SIGINT) and SIGTERM (systemd, Docker, Kubernetes, Slurm) stop at the next step
  // boundary after a checkpoint; a second signal, or SIGTERM's grace time running out, quits.
  const result = await train({
    ...options,
    stopOnSignals: { onSignal: () => bar?.clear() },
    onStart: (info) => {
      run = info.options;
      software = info.device.software;
      if (info.resumedFrom) history.push(...info.resumedFrom.history);
      printStart(info);
    },
    onRestart: ({ restart, maxRestarts, error, from }) => {
      bar?.clear();
      console.error(
        `${error.message}; restarting every worker from ${from} (restart ${restart} of ${maxRestarts})`,
      );
    },
    onStep: (progress) => {
      if (progress.step === 1) {
        bar?.clear();
        bar = new ProgressBar(progress.steps, {
          label: `epoch ${progress.epoch}/${run.epochs}`,
        });
        firstStepSeconds = progress.seconds;
      }
      bar ??= new ProgressBar(progress.steps, { label: `epoch ${progress.epoch}/${run.epochs}` });
      // The first step of an epoch also compiles shaders or warms caches: leave it out.
      const perStep = progress.step > 1
        ? (progress.seconds - firstStepSeconds) / (progress.step - 1)
        : progress.seconds;
      const left = perStep * (progress.steps - progress.step);
      bar?.update(
        progress.step,
        `${progress.step}/${progress.steps} loss ${progress.loss.toFixed(3)} ` +
          `acc ${progress.trainAcc.toFixed(3)} | ${formatDuration(left)} left`,
      );
      if (!etaShown && software && progress.epoch === 1 && enoughForEta(progress)) {
        etaShown = true;
        const total = firstStepSeconds + perStep * (progress.steps * run.epochs - 1);
        bar?.clear();
        console.error(
          `note: training on a software adapter (no GPU): ${perStep.toFixed(2)} s per step, ` +
            `about ${formatDuration(total)} for ${run.epochs} epoch(s) plus evaluation`,
        );
        const advice = longRunAdvice({ seconds: total, cores: navigator.hardwareConcurrency });
        if (advice) console.error(advice);
      }
    },
    onEvaluate: ({ epoch, done, total }) => {
      if (evalBar === null) {
        bar?.clear();
        evalBar = new ProgressBar(total, { label: `epoch ${epoch}/${run.epochs} evaluating` });
      }
      evalBar.update(done, `${done}/${total} test examples`);
    },
    onEpoch: async (record) => {
      evalBar?.clear();
      evalBar = null;
      bar?.clear();
      history.push(record);
      console.log(formatEpoch(record, run));
      if (metricsPath) await writeFileAtomic(metricsPath, historyToJsonl(history));
      if (plotPath) {
        const title =
          `${describeModelShort(run.model)} on ${
            DATASET_TITLES[run.data.dataset]
          }: ${run.distributed.workers} worker(s), ` +
          `batch ${run.batchSize}, lr ${run.lr}`;
        await writeFileAtomic(plotPath, renderHistorySvg(history, { epochs: run.epochs, title }));
      }
    },
  }).finally(() => bar?.clear());
  const last = result.history.at(-1)!;
  console.log(formatMetrics(last));
  const device = result.device ? ` on ${result.device.adapter}` : "";
  console.log(`${result.examplesPerSec.toFixed(1)} examples/sec${device}`);
  if (typeof options.trace === "object") {
    console.log(`trace written to ${options.trace.file} (open it in Perfetto or chrome://tracing)`);
  }
  if (exportDir) {
    await initBackend("cpu"); // building and saving the model needs no GPU
    await exportLayersModel(result.weights, {
      dir: exportDir,
      model: run.model,
      normalize: run.data.normalize,
    });
    console.log(`model saved to ${exportDir} (TensorFlow.js LayersModel)`);
  }
}

/** `--export DIR`: a directory that exists or can be created, checked before training. */
async function exportPath(dir: string): Promise<string> {
  const stat = await statOrNull(dir, `--export ${dir}`);
  if (stat !== null && !stat.isDirectory) {
    throw new UsageError(`--export ${dir} exists and is not a directory`);
  }
  if (stat === null) await outputPath("--export", dir); // its parent must exist and be writable
  else {
    await probeWritable(dir).catch((error: Error) => {
      throw new UsageError(`--export ${dir}: cannot write there: ${error.message}`);
    });
  }
  return dir;
}

/**
 * Lets `flag` be given without a value (`--resume` alone) in `parseArgs`'
 * strict mode, by writing it as `--resume=` when no value follows.
 */
function withOptionalValue(args: string[], flag: string): string[] {
  return args.map((arg, i) =>
    arg === flag && (i + 1 === args.length || args[i + 1].startsWith("-")) ? `${flag}=` : arg
  );
}

function printStart(info: TrainStart): void {
  const options = { ...info.options, ...info.options.distributed };
  const perWorker = options.batchSize / options.replicas;
  const share = (Number.isInteger(perWorker) ? `${perWorker}` : `~${perWorker.toFixed(1)}`) +
    " per worker" + (options.shardsPerReplica > 1 ? ` in ${options.shardsPerReplica} shards` : "");
  console.log(
    `${describeModel(options.model, info)} on ` +
      `${info.trainCount} training / ${info.testCount} test examples`,
  );
  const group = options.processGroup;
  const where = !group
    ? ""
    : group.backend === "mpi"
    ? ` × ${group.size} processes (this is rank ${group.rank}; ${group.version})`
    : ` × ${group.size} processes (this is rank ${group.rank}; rendezvous ${group.masterAddr}:${group.masterPort})`;
  console.log(
    `${options.workers} worker(s)${where} on ${info.device.backend}` +
      `${info.device.kernels ? ` (${info.device.kernels} kernels)` : ""}: ` +
      `${adapterWithPath(info.device)}${pinnedBy()}; ` +
      `batch ${options.batchSize} (${share}), ${describeOptimizer(options)}` +
      `${
        options.shardOptimizer ? `, optimizer sharded over the ${options.workers} workers` : ""
      }, ` +
      `${info.stepsPerEpoch} steps per epoch`,
  );
  if (info.resumedFrom) {
    const { path, epochsDone, stepsDone, skipped } = info.resumedFrom;
    for (const { reason } of skipped) console.error(`warning: passed over ${reason}`);
    console.log(`resuming from ${path}: ${epochsDone} epoch(s) and ${stepsDone} step(s) done`);
  }
  const serialised = serialisedWorkersWarning(info.device, options.workers);
  if (serialised) console.error(serialised);
  if (info.device.software) {
    console.error(
      `note: ${info.device.adapter} is a software adapter, not a GPU; ` +
        `LP_NUM_THREADS=${info.rendererThreads ?? "default"} per worker`,
    );
  }
  const cores = navigator.hardwareConcurrency;
  const crowded = workersAdvice({
    workers: options.workers,
    cores,
    software: info.device.software,
  });
  if (crowded) console.error(crowded);
}

/** How the launcher chose this process's GPU (Mesa's device-select layer), if it did. */
function pinnedBy(): string {
  for (const name of ["DRI_PRIME", "MESA_VK_DEVICE_SELECT"]) {
    const value = Deno.env.get(name);
    if (value) return ` (chosen by ${name}=${value})`;
  }
  return "";
}

/** ETA once three steps after the first (which compiles the shaders) are done, or 60 s passed. */
function enoughForEta(progress: { step: number; steps: number; seconds: number }): boolean {
  return progress.step >= Math.min(4, progress.steps) || progress.seconds > 60;
}

async function printSummary(config: ModelConfig): Promise<void> {
  await initBackend("cpu");
  const model = await buildModel(config);
  console.log(`input: ${model.inputs[0].shape.slice(1).join("×")}`);
  // NiN's and ResNet-18's rows group each block's layers, as d2l prints them.
  const staged = config.name === "nin" || config.name === "resnet18";
  const rows = staged ? stageSummary(model) : model.layers.map((layer) => ({
    name: layer.name,
    outputShape: (layer.outputShape as number[]).slice(1),
    params: layer.countParams(),
  }));
  const width = Math.max(9, ...rows.map((row) => row.name.length + 1));
  for (const row of rows) {
    const shape = row.outputShape.join("×");
    console.log(
      `${row.name.padEnd(width)} output ${shape.padEnd(12)} ${
        row.params.toLocaleString("en-US")
      } parameters`,
    );
  }
  const trainable = trainableParams(model);
  const rest = model.countParams() - trainable;
  console.log(
    `total: ${trainable.toLocaleString("en-US")} parameters${
      rest > 0
        ? ` (and ${rest.toLocaleString("en-US")} batch-normalisation statistics or frozen weights)`
        : ""
    }`,
  );
  model.dispose();
}

/** "NiN", "LeNet", "ResNet-18", or a user's model's export. */
function describeModelShort(model: ModelConfig): string {
  return model.name === "nin"
    ? "NiN"
    : model.name === "lenet"
    ? "LeNet"
    : model.name === "resnet18"
    ? "ResNet-18"
    : `${model.export ?? "model"}`;
}

/** "NiN (36,646 parameters, 67×67 input, width 0.125)", "LeNet (…)", or a custom model's export and module. */
function describeModel(model: ModelConfig, info: TrainStart): string {
  const [height, width, channels] = info.inputShape;
  const input = `${height}×${width}${channels === 1 ? "" : `×${channels}`} input`;
  const params = `${info.numParams.toLocaleString("en-US")} parameters`;
  if (model.name === "nin") return `NiN (${params}, ${input}, width ${model.options.width})`;
  if (model.name === "lenet") return `LeNet (${params}, ${input})`;
  if (model.name === "resnet18") {
    return `ResNet-18 (${params}, ${input}, width ${model.options.width})`;
  }
  return `${model.export} of ${model.module} (${params}, ${input})`;
}

/**
 * "lr 0.1", "lr 0.1 after a 0.5-epoch warm-up", or e.g.
 * "sgd (momentum 0.9, nesterov) lr 0.1, cosine schedule after a 1-epoch warm-up".
 */
function describeOptimizer(options: TrainStart["options"]): string {
  const { name, ...hyper } = options.optimizer;
  const settings = Object.entries(hyper).filter(([, v]) => v !== undefined && v !== false)
    .map(([k, v]) => (v === true ? k : `${k} ${v}`));
  const optimizer = name === "sgd" && settings.length === 0
    ? ""
    : `${name}${settings.length ? ` (${settings.join(", ")})` : ""} `;
  const { name: scheduleName, warmupEpochs } = options.schedule;
  const warmup = warmupEpochs ? `after a ${warmupEpochs}-epoch warm-up` : "";
  const schedule = scheduleName === "constant"
    ? (warmup ? ` ${warmup}` : "")
    : `, ${scheduleName} schedule${warmup ? ` ${warmup}` : ""}`;
  return `${optimizer}lr ${options.lr}${schedule}`;
}

if (import.meta.main) await runCli(main);

/**
 * `--join HOST:PORT`: this process is a member of the elastic run served
 * there until the run ends, drops it, or Ctrl-C / SIGTERM makes it leave.
 */
async function joinFromCli(values: Record<string, unknown>): Promise<void> {
  const others = Object.keys(values).filter((name) =>
    values[name] !== undefined && name !== "join" && name !== "token-file"
  );
  if (others.length > 0) {
    throw new UsageError(
      `--join takes only --token-file (the run it joins decides the rest), got --${others[0]}`,
    );
  }
  memberUrl(values.join as string); // a usage error first
  const file = values["token-file"] as string | undefined;
  let token = Deno.env.get("DDP_TOKEN");
  if (file !== undefined) {
    try {
      token = (await Deno.readTextFile(file)).replace(/\r?\n$/, "");
    } catch (error) {
      throw new UsageError(`--token-file ${file}: ${(error as Error).message}`);
    }
  }
  if (token === undefined) {
    throw new UsageError("--join needs the job's token: DDP_TOKEN or --token-file FILE");
  }
  const leave = new AbortController();
  const stop = () => leave.abort();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  const ended = await joinRun({
    address: values.join as string,
    token,
    signal: leave.signal,
    onLine: (line) => console.error(line),
  });
  console.error(
    `${ended.clean ? "" : "error: "}${ended.reason} (${ended.shards} shard(s) computed)`,
  );
  if (!ended.clean) Deno.exit(1);
}

/** One line for a change of an elastic run's membership (none for a check that passed). */
function memberLine(event: MemberEvent): string | undefined {
  switch (event.type) {
    case "joined":
      return `${event.name} joined on ${event.device}`;
    case "left":
      return `${event.name} left after ${event.shards} shard(s): ${event.reason}; its work goes to the others`;
    case "paused":
      return `paused: ${event.members} member(s), ${event.minMembers} needed; waiting for members to join`;
    case "resumed":
      return `resumed with ${event.members} member(s)`;
    case "verified":
      return undefined; // one that fails is told by the "left" that follows
  }
}
