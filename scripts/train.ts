/**
 * `deno task train`: data-parallel NiN on Fashion-MNIST from the command line.
 *
 * @module
 */

import { dirname, resolve } from "node:path";
import {
  type BackendName,
  BACKENDS,
  type EpochRecord,
  formatDuration,
  formatEpoch,
  formatMetrics,
  historyToJsonl,
  initBackend,
  type KernelInit,
  type NiNOptions,
  renderHistorySvg,
  resolveTrainOptions,
  train,
  type TrainOptions,
  type TrainStart,
  UsageError,
} from "../mod.ts";
import { createNiN, ninSummary } from "../model.ts";
import { writeFileAtomic } from "../lib/util/atomic_write.ts";
import { numberFlag, parseFlags, runCli } from "../lib/util/cli.ts";
import { ProgressBar } from "../lib/util/progress.ts";

/** `--preset quick`: small enough for a 2-core CPU machine in minutes; lr stays 0.1. */
const QUICK: TrainOptions = {
  inputSize: 68,
  width: 0.25,
  trainLimit: 3072,
  testLimit: 1024,
  epochs: 3,
  batchSize: 64,
};

function describeQuick(): string {
  return `${QUICK.inputSize} px, width ${QUICK.width}, ${QUICK.trainLimit} train / ` +
    `${QUICK.testLimit} test examples, ${QUICK.epochs} epochs, batch ${QUICK.batchSize}`;
}

const HELP = `Train d2l's Network in Network on Fashion-MNIST, data-parallel across Deno workers.

Usage: deno task train [options]

  --workers N        worker replicas (default 1)
  --epochs N         passes over the training set (default 10)
  --batch-size N     global batch, split across the workers (default 128)
  --lr X             SGD learning rate (default 0.1)
  --seed N           seed of initialisation, shuffling and dropout (default 0)
  --backend NAME     webgpu (default) or cpu
  --input-size N     side images are resized to (default 224, at least 67)
  --width X          channel multiplier of the first three NiN blocks (default 1)
  --dropout X        dropout rate (default 0.5)
  --init NAME        kernel initialisation: he-normal (default) or glorot-uniform
  --train-limit N    use only the first N training examples
  --test-limit N     use only the first N test examples
  --preset NAME      d2l (default) or quick: ${describeQuick()}
  --data-dir DIR     directory with the four Fashion-MNIST files (or FASHION_MNIST_DIR)
  --no-download      fail instead of downloading missing files
  --metrics FILE     write one JSON object per epoch (JSON Lines)
  --plot FILE        draw train loss, train acc and test acc per epoch as SVG
  --summary          print each layer's output shape and parameter count, then exit
  -h, --help         show this help
`;

async function main(): Promise<void> {
  const { values } = parseFlags({
    options: {
      workers: { type: "string" },
      epochs: { type: "string" },
      "batch-size": { type: "string" },
      lr: { type: "string" },
      seed: { type: "string" },
      backend: { type: "string" },
      "input-size": { type: "string" },
      width: { type: "string" },
      dropout: { type: "string" },
      init: { type: "string" },
      "train-limit": { type: "string" },
      "test-limit": { type: "string" },
      preset: { type: "string" },
      "data-dir": { type: "string" },
      "no-download": { type: "boolean" },
      metrics: { type: "string" },
      plot: { type: "string" },
      summary: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(HELP);
    return;
  }
  const preset = values.preset ?? "d2l";
  if (preset !== "d2l" && preset !== "quick") {
    throw new UsageError(`--preset must be d2l or quick, got "${preset}"`);
  }
  const backend = values.backend ?? "webgpu";
  if (!BACKENDS.includes(backend as BackendName)) {
    throw new UsageError(`--backend must be one of ${BACKENDS.join(", ")}, got "${backend}"`);
  }
  const flags: TrainOptions = {
    workers: numberFlag("--workers", values.workers, { integer: true }),
    epochs: numberFlag("--epochs", values.epochs, { integer: true }),
    batchSize: numberFlag("--batch-size", values["batch-size"], { integer: true }),
    lr: numberFlag("--lr", values.lr),
    seed: numberFlag("--seed", values.seed, { integer: true }),
    inputSize: numberFlag("--input-size", values["input-size"], { integer: true }),
    width: numberFlag("--width", values.width),
    dropout: numberFlag("--dropout", values.dropout),
    trainLimit: numberFlag("--train-limit", values["train-limit"], { integer: true }),
    testLimit: numberFlag("--test-limit", values["test-limit"], { integer: true }),
  };
  const options: TrainOptions = {
    ...(preset === "quick" ? QUICK : {}),
    ...withoutUndefined(flags),
    backend: backend as BackendName,
    init: values.init as KernelInit | undefined,
    dataDir: values["data-dir"],
    download: !values["no-download"],
  };
  const resolved = resolveTrainOptions(options); // usage errors before any work
  if (values.summary) {
    await printSummary(resolved.model);
    return;
  }
  const metricsPath = values.metrics && await outputPath("--metrics", values.metrics);
  const plotPath = values.plot && await outputPath("--plot", values.plot);

  const history: EpochRecord[] = [];
  let bar: ProgressBar | null = null;
  let etaShown = false;
  let software = false;
  const result = await train({
    ...options,
    onStart: (info) => {
      software = info.device.software;
      printStart(info);
    },
    onStep: (progress) => {
      if (progress.step === 1) {
        bar?.clear();
        bar = new ProgressBar(progress.steps, {
          label: `epoch ${progress.epoch}/${resolved.epochs}`,
        });
      }
      const perStep = progress.seconds / progress.step;
      const left = perStep * (progress.steps - progress.step);
      bar?.update(
        progress.step,
        `${progress.step}/${progress.steps} loss ${progress.loss.toFixed(3)} ` +
          `acc ${progress.trainAcc.toFixed(3)} | ${formatDuration(left)} left`,
      );
      if (!etaShown && software && progress.epoch === 1 && enoughForEta(progress)) {
        etaShown = true;
        const total = perStep * progress.steps * resolved.epochs;
        bar?.clear();
        console.error(
          `note: training on a software adapter (no GPU): ${perStep.toFixed(2)} s per step, ` +
            `about ${formatDuration(total)} for ${resolved.epochs} epoch(s) plus evaluation`,
        );
      }
    },
    onEpoch: async (record) => {
      bar?.clear();
      history.push(record);
      console.log(formatEpoch(record, resolved));
      if (metricsPath) await writeFileAtomic(metricsPath, historyToJsonl(history));
      if (plotPath) {
        await writeFileAtomic(plotPath, renderHistorySvg(history, { epochs: resolved.epochs }));
      }
    },
  });
  const last = result.history.at(-1)!;
  console.log(formatMetrics(last));
  console.log(`${result.examplesPerSec.toFixed(1)} examples/sec on ${result.device.adapter}`);
}

function printStart(info: TrainStart): void {
  const { options } = info;
  const perWorker = options.batchSize / options.workers;
  const share = Number.isInteger(perWorker) ? `${perWorker}` : `~${perWorker.toFixed(1)}`;
  console.log(
    `NiN (${info.numParams.toLocaleString("en-US")} parameters, ${options.model.inputSize}×` +
      `${options.model.inputSize} input, width ${options.model.width}) on ` +
      `${info.trainCount} training / ${info.testCount} test examples`,
  );
  console.log(
    `${options.workers} worker(s) on ${info.device.backend}: ${info.device.adapter}; ` +
      `batch ${options.batchSize} (${share} per worker), lr ${options.lr}, ` +
      `${info.stepsPerEpoch} steps per epoch`,
  );
  if (info.device.software) {
    console.error(
      `note: ${info.device.adapter} is a software adapter, not a GPU; ` +
        `LP_NUM_THREADS=${readEnv("LP_NUM_THREADS") ?? "default"} per worker`,
    );
  }
}

/** ETA once two steps after the first (which compiles the shaders) are done, or 30 s passed. */
function enoughForEta(progress: { step: number; steps: number; seconds: number }): boolean {
  return progress.step >= Math.min(3, progress.steps) || progress.seconds > 30;
}

async function printSummary(model: Required<NiNOptions>): Promise<void> {
  await initBackend("cpu");
  const nin = createNiN(model);
  console.log(`input: ${model.inputSize}×${model.inputSize}×1`);
  for (const row of ninSummary(nin)) {
    const shape = row.outputShape.join("×");
    console.log(
      `${row.name.padEnd(9)} output ${shape.padEnd(12)} ${
        row.params.toLocaleString("en-US")
      } parameters`,
    );
  }
  console.log(`total: ${nin.countParams().toLocaleString("en-US")} parameters`);
  nin.dispose();
}

/** Resolves an output file path and checks its directory exists, before any training. */
async function outputPath(flag: string, path: string): Promise<string> {
  const full = resolve(path);
  const stat = await Deno.stat(dirname(full)).catch(() => null);
  if (stat === null || !stat.isDirectory) {
    throw new UsageError(`${flag} ${path}: directory ${dirname(full)} does not exist`);
  }
  const existing = await Deno.stat(full).catch(() => null);
  if (existing?.isDirectory) throw new UsageError(`${flag} ${path} is a directory`);
  return full;
}

function withoutUndefined<T extends object>(object: T): Partial<T> {
  return Object.fromEntries(Object.entries(object).filter(([, v]) => v !== undefined)) as Partial<
    T
  >;
}

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

if (import.meta.main) await runCli(main);
