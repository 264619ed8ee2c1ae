/**
 * `deno task train`: data-parallel NiN on Fashion-MNIST from the command line.
 *
 * @module
 */

import {
  type EpochRecord,
  formatDuration,
  formatEpoch,
  formatMetrics,
  historyToJsonl,
  initBackend,
  type NiNOptions,
  renderHistorySvg,
  resolveTrainOptions,
  train,
  type TrainStart,
} from "../mod.ts";
import { createNiN, ninSummary } from "../model.ts";
import { writeFileAtomic } from "../lib/util/atomic_write.ts";
import { outputPath, parseFlags, runCli } from "../lib/cli/cli.ts";
import { TRAIN_FLAGS, TRAIN_FLAGS_HELP, trainOptionsFromFlags } from "../lib/cli/train_flags.ts";
import { ProgressBar } from "../lib/util/progress.ts";

const HELP = `Train d2l's Network in Network on Fashion-MNIST, data-parallel across Deno workers.

Usage: deno task train [options]

${TRAIN_FLAGS_HELP}
  --metrics FILE     write one JSON object per epoch (JSON Lines)
  --plot FILE        draw train loss, train acc and test acc per epoch as SVG
  --summary          print each layer's output shape and parameter count, then exit
  -h, --help         show this help
`;

async function main(): Promise<void> {
  const { values } = parseFlags({
    options: {
      ...TRAIN_FLAGS,
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
  const options = trainOptionsFromFlags(values);
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
  let firstStepSeconds = 0;
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
        firstStepSeconds = progress.seconds;
      }
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
        const total = firstStepSeconds + perStep * (progress.steps * resolved.epochs - 1);
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
        const title =
          `NiN on Fashion-MNIST: ${resolved.workers} worker(s), batch ${resolved.batchSize}, lr ${resolved.lr}`;
        await writeFileAtomic(
          plotPath,
          renderHistorySvg(history, { epochs: resolved.epochs, title }),
        );
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
        `LP_NUM_THREADS=${info.rendererThreads ?? "default"} per worker`,
    );
  }
}

/** ETA once three steps after the first (which compiles the shaders) are done, or 60 s passed. */
function enoughForEta(progress: { step: number; steps: number; seconds: number }): boolean {
  return progress.step >= Math.min(4, progress.steps) || progress.seconds > 60;
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

if (import.meta.main) await runCli(main);
