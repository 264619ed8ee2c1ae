/**
 * `deno task eval`: test accuracy, per-class accuracy and the confusion
 * matrix of a trained model (exported with `--export`, or a checkpoint).
 *
 * @module
 */

import type { LayersModel } from "npm:@tensorflow/tfjs-layers@4.22.0";
import { numberFlag, outputPath, parseFlags, runCli } from "../lib/cli/cli.ts";
import { loadLayersModelFromDir, setFlatWeights } from "../lib/model/export.ts";
import { evaluateModel } from "../lib/train/coordinator/evaluate.ts";
import { renderConfusionSvg } from "../lib/train/coordinator/plot.ts";
import { formatConfusion, formatPerClass } from "../lib/train/coordinator/report.ts";
import { writeFileAtomic } from "../lib/util/atomic_write.ts";
import { ProgressBar } from "../lib/util/progress.ts";
import { BACKENDS } from "../internal.ts";
import { type BackendName, DataError, UsageError } from "../mod.ts";
import { readCheckpoint } from "../checkpoint.ts";
import { initBackend } from "../model.ts";
import { buildModel, modelSizes } from "../lib/model/registry.ts";
import { trainableParams } from "../lib/model/nin.ts";
import { modelFlag } from "../lib/cli/train_flags.ts";
import { resumedModel } from "../lib/train/coordinator/resume.ts";
import { type DatasetName, DATASETS } from "../lib/data/registry.ts";
import type { Normalization } from "../lib/data/dataset.ts";

const HELP = `Evaluate a trained model on the test set of its data set.

Usage: deno task eval (--model DIR | --checkpoint FILE) [options]

  --model DIR        a model saved by deno task train --export DIR (TensorFlow.js LayersModel)
  --checkpoint FILE  a checkpoint written by deno task train --checkpoint-dir
  --model-module FILE[#EXPORT]
                     with --checkpoint of your own model: the module that builds it (a
                     checkpoint is data; the code comes from you, compared with its record)
  --backend NAME     webgpu (default) or cpu
  --batch-size N     images per forward pass (default 128)
  --test-limit N     evaluate the first N test examples only
  --dataset NAME     with --model: fashion-mnist (default) or cifar10 (a checkpoint
                     names its own)
  --data-dir DIR     directory with the data set's files (or FASHION_MNIST_DIR, CIFAR10_DIR)
  --no-download      fail instead of downloading missing files
  --plot FILE        draw the confusion matrix as SVG
  -h, --help         show this help
`;

async function main(): Promise<void> {
  const { values } = parseFlags({
    options: {
      model: { type: "string" },
      checkpoint: { type: "string" },
      "model-module": { type: "string" },
      backend: { type: "string" },
      "batch-size": { type: "string" },
      "test-limit": { type: "string" },
      "data-dir": { type: "string" },
      dataset: { type: "string" },
      "no-download": { type: "boolean" },
      plot: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(HELP);
    return;
  }
  if ((values.model === undefined) === (values.checkpoint === undefined)) {
    throw new UsageError("give exactly one of --model DIR and --checkpoint FILE (see --help)");
  }
  const backend = values.backend ?? "webgpu";
  if (!BACKENDS.includes(backend as BackendName)) {
    throw new UsageError(`--backend must be one of ${BACKENDS.join(", ")}, got "${backend}"`);
  }
  if (values["model-module"] !== undefined && values.checkpoint === undefined) {
    throw new UsageError("--model-module goes with --checkpoint FILE (see --help)");
  }
  const given = values["model-module"] === undefined
    ? undefined
    : modelFlag("--model-module", values["model-module"]);
  const batchSize = numberFlag("--batch-size", values["batch-size"], { integer: true }) ?? 128;
  const testLimit = numberFlag("--test-limit", values["test-limit"], { integer: true });
  for (const [flag, value] of [["--batch-size", batchSize], ["--test-limit", testLimit]] as const) {
    if (value !== undefined && value < 1) {
      throw new UsageError(`${flag} must be a positive integer, got ${value}`);
    }
  }
  if (values.dataset !== undefined && !Object.hasOwn(DATASETS, values.dataset)) {
    throw new UsageError(
      `--dataset must be one of ${Object.keys(DATASETS).join(", ")}, got "${values.dataset}"`,
    );
  }
  if (values.dataset !== undefined && values.checkpoint !== undefined) {
    throw new UsageError("--dataset goes with --model DIR: a checkpoint names its own data set");
  }
  const plotPath = values.plot && await outputPath("--plot", values.plot);

  const device = await initBackend(backend as BackendName);
  let model: LayersModel;
  let source: string;
  let normalize: Normalization | undefined;
  // An exported model's is given (default Fashion-MNIST); a checkpoint says its own.
  let datasetName = (values.dataset ?? "fashion-mnist") as DatasetName;
  if (values.model !== undefined) {
    model = await loadLayersModelFromDir(values.model);
    normalize = (model.getUserDefinedMetadata() as { normalize?: Normalization } | undefined)
      ?.normalize;
    source = values.model;
  } else {
    const state = await readCheckpoint(values.checkpoint!);
    datasetName = state.config.dataset ?? datasetName;
    // The checkpoint's record only names a built-in, or is compared with the module given.
    const config = resumedModel(values.checkpoint!, state.config, given);
    const sizes = modelSizes(config);
    if (sizes !== undefined && sizes.params !== state.weights.length) {
      throw new DataError(
        `${values.checkpoint} holds ${state.weights.length} weights, but ${config.name} as it ` +
          `records it has ${sizes.params}: it is not a checkpoint of that model`,
      );
    }
    model = await buildModel(config);
    normalize = state.config.normalize;
    setFlatWeights(model, state.weights);
    source =
      `${values.checkpoint} (after ${state.epochsDone} epoch(s) and ${state.stepsDone} step(s))`;
  }
  const entry = DATASETS[datasetName];
  const { test } = await entry.load({
    dataDir: values["data-dir"],
    download: !values["no-download"],
  });
  const count = Math.min(testLimit ?? test.count, test.count);
  const dataset = { ...test, count };
  const side = model.inputs[0].shape[1];
  console.log(
    `model: ${source}: ${side}×${side} input, ${trainableParams(model).toLocaleString("en-US")} ` +
      `parameters; ${device.backend} on ${device.adapter}`,
  );
  const bar = new ProgressBar(count, { label: "evaluating" });
  const result = await evaluateModel(model, dataset, {
    batchSize,
    normalize,
    onProgress: (done) => bar.update(done, `${done}/${count}`),
  });
  bar.clear();
  model.dispose();
  console.log(`test accuracy ${result.accuracy.toFixed(3)} on ${result.count} examples\n`);
  console.log(formatPerClass(result.confusion, entry.classes));
  console.log(`\n${formatConfusion(result.confusion, entry.classes)}`);
  if (plotPath) {
    const title = `Fashion-MNIST test set: accuracy ${
      result.accuracy.toFixed(3)
    } (${count} examples)`;
    await writeFileAtomic(
      plotPath,
      renderConfusionSvg(result.confusion, { labels: entry.classes, title }),
    );
  }
}

if (import.meta.main) await runCli(main);
