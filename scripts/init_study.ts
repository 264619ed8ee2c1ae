/**
 * Does NiN at lr 0.1 learn or stall, by kernel initialisation? Trains the same
 * configuration with each initialisation and several seeds, and prints a
 * Markdown table of the final metrics (the README's evidence for He-normal).
 *
 *     deno run -A scripts/init_study.ts --seeds 0,1,2 --preset quick --workers 2 --epochs 1
 *
 * @module
 */

import { KERNEL_INITS, type KernelInit, train } from "../mod.ts";
import { formatMetrics } from "../lib/train/report.ts";
import { parseFlags, runCli } from "../lib/cli/cli.ts";
import { TRAIN_FLAGS, TRAIN_FLAGS_HELP, trainOptionsFromFlags } from "../lib/cli/train_flags.ts";
import { DataError, UsageError } from "../lib/errors.ts";

const HELP = `Train NiN with each kernel initialisation and several seeds; print a table.

Usage: deno run -A scripts/init_study.ts [--seeds 0,1,2] [--inits he-normal,glorot-uniform] [options]

  --seeds LIST       comma-separated seeds (default 0,1,2)
  --inits LIST       comma-separated initialisations (default ${KERNEL_INITS.join(",")})
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
  const rows: string[] = [];
  for (const init of inits) {
    for (const seed of seeds) {
      try {
        const { history } = await train({ ...base, init, seed });
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

if (import.meta.main) await runCli(main);
