/**
 * Does NiN at lr 0.1 learn or stall, by kernel initialisation? Trains the same
 * configuration with each initialisation and several seeds, and prints a
 * Markdown table of the final metrics (the README's evidence for He-normal).
 * With `--signal` it trains nothing: it measures, at initialisation, how large
 * each convolution's output is and how large the first step would be, on a
 * batch of real images (by default on the full d2l model).
 *
 *     deno run -A scripts/init_study.ts --seeds 0,1,2 --preset quick --workers 2 --epochs 1
 *     deno run -A scripts/init_study.ts --signal --data-dir DIR
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import * as tfl from "npm:@tensorflow/tfjs-layers@4.22.0";
import { KERNEL_INITS } from "../internal.ts";
import type { KernelInit } from "../mod.ts";
import { train } from "../mod.ts";
import { loadFashionMNIST } from "../data.ts";
import { createNiN, initBackend, type NiNOptions } from "../model.ts";
import type { NiNModel } from "../lib/model/registry.ts";
import { resolveTrainOptions } from "../lib/train/shared/resolve.ts";
import { gatherBatch } from "../lib/data/batches.ts";
import { toModelInput } from "../lib/train/shared/model_input.ts";
import { formatMetrics } from "../lib/train/coordinator/report.ts";
import { parseFlags, runCli } from "../lib/cli/cli.ts";
import { TRAIN_FLAGS, TRAIN_FLAGS_HELP, trainOptionsFromFlags } from "../lib/cli/train_flags.ts";
import { DataError, UsageError } from "../lib/errors.ts";

const HELP = `Train NiN with each kernel initialisation and several seeds; print a table.

Usage: deno run -A scripts/init_study.ts [--seeds 0,1,2] [--inits he-normal,glorot-uniform] [options]

  --seeds LIST       comma-separated seeds (default 0,1,2)
  --inits LIST       comma-separated initialisations (default ${KERNEL_INITS.join(",")})
  --signal           train nothing; per initialisation and seed, print the RMS of every
                     convolution's output at initialisation and, for the first and last
                     convolution, |gradient| / |weights| of one lr 0.1 step, on 16 training
                     images (model flags apply; default the full d2l model)
${TRAIN_FLAGS_HELP}
  -h, --help         show this help

A run counts as stalled when its final test accuracy is below 0.2 (chance is 0.1).
`;

/** Final test accuracy below which a run has not learned. */
const STALLED_BELOW = 0.2;

async function main(): Promise<void> {
  const { values } = parseFlags({
    options: {
      ...TRAIN_FLAGS,
      seeds: { type: "string" },
      inits: { type: "string" },
      signal: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(HELP);
    return;
  }
  const base = trainOptionsFromFlags(values);
  const seeds = (values.seeds ?? "0,1,2").split(",").map((s) => {
    const seed = Number(s);
    if (s.trim() === "" || !Number.isInteger(seed)) {
      throw new UsageError(`--seeds must be comma-separated integers, got "${values.seeds}"`);
    }
    return seed;
  });
  const inits = (values.inits ?? KERNEL_INITS.join(",")).split(",") as KernelInit[];
  const bad = inits.find((init) => !KERNEL_INITS.includes(init));
  if (bad !== undefined) {
    throw new UsageError(`--inits must name ${KERNEL_INITS.join(", ")}, got "${bad}"`);
  }
  if (values.signal) {
    const shape = resolveTrainOptions(base).model.options as NiNOptions;
    await printSignal({ ...shape, dataDir: base.data?.dir, seeds, inits });
    return;
  }
  const rows: string[] = [];
  for (const init of inits) {
    for (const seed of seeds) {
      try {
        const model = { ...base.model as NiNModel | undefined, name: "nin" as const, init };
        const { history } = await train({ ...base, model, seed });
        const last = history.at(-1)!;
        const stalled = last.testAcc < STALLED_BELOW;
        console.error(
          `${init}, seed ${seed}: ${formatMetrics(last)}${stalled ? " (stalled)" : ""}`,
        );
        rows.push(
          `| ${init} | ${seed} | ${last.loss.toFixed(3)} | ${last.trainAcc.toFixed(3)} | ` +
            `${last.testAcc.toFixed(3)} | ${stalled ? "stalled" : "learned"} |`,
        );
      } catch (error) {
        if (error instanceof UsageError || error instanceof DataError) throw error;
        const reason = error instanceof Error ? error.message : String(error);
        console.error(`${init}, seed ${seed}: failed: ${reason}`);
        rows.push(`| ${init} | ${seed} | | | | failed: ${reason} |`);
      }
    }
  }
  console.log("| init | seed | train loss | train acc | test acc | |");
  console.log("| --- | --- | --- | --- | --- | --- |");
  for (const row of rows) console.log(row);
}

/**
 * At initialisation: the RMS of each convolution's (ReLU) output, the logits'
 * standard deviation, the loss, and |∇W| / |W| of the first and last kernel.
 */
async function printSignal(
  options: NiNOptions & { dataDir?: string; seeds: number[]; inits: KernelInit[] },
): Promise<void> {
  await initBackend("webgpu");
  const { train: data } = await loadFashionMNIST({ dataDir: options.dataDir });
  const batch = gatherBatch(data, Array.from({ length: 16 }, (_, i) => i));
  const shape: NiNOptions = {
    inputSize: options.inputSize,
    width: options.width,
    dropout: 0,
  };
  const side = options.inputSize ?? 224;
  const x = toModelInput(batch, { height: side, width: side });
  const labels = tf.oneHot(tf.tensor1d(Array.from(batch.labels), "int32"), 10);
  console.log(
    "| init | seed | conv output RMS, layer 1 → 12 | logits std | loss | " +
      "first |∇W|/|W| | last |∇W|/|W| |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- |");
  for (const init of options.inits) {
    for (const seed of options.seeds) {
      const model = createNiN({ ...shape, init, seed });
      const convs = model.layers.filter((layer) => layer.getClassName() === "Conv2D");
      const probe = tfl.model({
        inputs: model.inputs,
        outputs: [...convs.map((l) => l.output as tfl.SymbolicTensor), model.outputs[0]],
      });
      const outputs = probe.predict(x) as tf.Tensor[];
      const rms = await Promise.all(
        outputs.slice(0, -1).map(async (t) => {
          const r = tf.tidy(() => tf.sqrt(tf.mean(tf.square(t))));
          const value = (await r.data())[0];
          r.dispose();
          return value;
        }),
      );
      const logitsStd = tf.tidy(() => tf.sqrt(tf.moments(outputs.at(-1)!).variance));
      const std = (await logitsStd.data())[0];
      const kernels = [convs[0], convs.at(-1)!].map((l) => l.getWeights()[0] as tf.Variable);
      const { value, grads } = tf.variableGrads(
        () => tf.losses.softmaxCrossEntropy(labels, model.apply(x) as tf.Tensor) as tf.Scalar,
        kernels,
      );
      const ratios = await Promise.all(kernels.map(async (kernel) => {
        const ratio = tf.tidy(() => tf.div(tf.norm(grads[kernel.name]), tf.norm(kernel)));
        const out = (await ratio.data())[0];
        ratio.dispose();
        return out;
      }));
      const loss = (await value.data())[0];
      console.log(
        `| ${init} | ${seed} | ${rms.map((v) => v.toPrecision(2)).join(", ")} | ` +
          `${std.toPrecision(2)} | ${loss.toFixed(3)} | ${ratios[0].toExponential(1)} | ` +
          `${ratios[1].toExponential(1)} |`,
      );
      tf.dispose([...outputs, logitsStd, value, ...Object.values(grads)]);
      model.dispose();
    }
  }
  tf.dispose([x, labels]);
}

if (import.meta.main) await runCli(main);
