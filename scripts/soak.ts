/**
 * Soak run: many steps of a tiny NiN on synthetic data, sampling the
 * workers' TensorFlow.js tensor counts and the resident memory of the process
 * (the coordinator and its worker threads), to show that nothing grows step
 * after step.
 *
 *     deno run -A scripts/soak.ts --steps 1000 --workers 2
 *
 * Exits with code 1 when a worker's tensor count is not flat.
 *
 * @module
 */

import { numberFlag, parseFlags, runCli } from "../lib/cli/cli.ts";
import { syntheticDataset } from "../lib/bench/stats.ts";
import { train } from "../mod.ts";

const HELP = `Soak: many training steps, tensor counts and memory sampled.

Usage: deno run -A scripts/soak.ts [--steps N] [--workers N] [--every N]

  --steps N     training steps (default 1000)
  --workers N   workers (default 2)
  --every N     sample every N steps (default 100)
`;

async function main(): Promise<void> {
  const { values } = parseFlags({
    options: {
      steps: { type: "string" },
      workers: { type: "string" },
      every: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return console.log(HELP);
  const steps = numberFlag("--steps", values.steps, { integer: true }) ?? 1000;
  const workers = numberFlag("--workers", values.workers, { integer: true }) ?? 2;
  const every = numberFlag("--every", values.every, { integer: true }) ?? 100;
  const batchSize = 2 * workers;
  const started = performance.now();
  const samples: { step: number; tensors: number[]; rssMiB: number }[] = [];
  let done = 0;
  console.log("step   tensors per worker   process RSS (MiB)   s");
  await train({
    data: { train: syntheticDataset(steps * batchSize, { seed: 1 }), test: syntheticDataset(2) },
    model: { name: "nin", inputSize: 67, width: 0.0625, dropout: 0 },
    distributed: { workers },
    batchSize,
    epochs: 1,
    profile: true, // reports each worker's tensor count with its step
    onStep: (progress) => {
      done++;
      if (done !== 1 && done % every !== 0) return;
      const tensors = progress.timings!.map((t) => t.tensors);
      const rssMiB = Deno.memoryUsage().rss / 2 ** 20;
      samples.push({ step: done, tensors, rssMiB });
      const seconds = ((performance.now() - started) / 1000).toFixed(0);
      console.log(
        `${String(done).padEnd(6)} ${tensors.join(", ").padEnd(20)} ` +
          `${rssMiB.toFixed(1).padStart(17)}   ${seconds}`,
      );
    },
  });
  const first = samples[0];
  const last = samples.at(-1)!;
  const flat = samples.every((s) => s.tensors.every((n, rank) => n === first.tensors[rank]));
  // Growth over the second half: the first steps fill caches (shaders, buffer pools).
  const after = samples.find((s) => s.step >= steps / 2) ?? first;
  console.log(
    `tensors: ${flat ? "flat" : "NOT flat"}; process RSS ${first.rssMiB.toFixed(1)} MiB at ` +
      `step 1, ${after.rssMiB.toFixed(1)} at step ${after.step}, ${last.rssMiB.toFixed(1)} at ` +
      `step ${last.step} (${(last.rssMiB - after.rssMiB).toFixed(1)} MiB from step ` +
      `${after.step} to ${last.step})`,
  );
  if (!flat) Deno.exit(1);
}

if (import.meta.main) await runCli(main);
