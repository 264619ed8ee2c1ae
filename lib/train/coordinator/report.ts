/**
 * Text and JSON renderings of training progress, in d2l's wording.
 *
 * @module
 */

import type { EpochRecord } from "../shared/options.ts";

/**
 * One line per epoch: `epoch 3/10: loss 0.512, train acc 0.811, test acc 0.802, 1480.2 examples/sec, 40.5 s`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatEpoch } from "./report.ts";
 *
 * const line = formatEpoch(
 *   { epoch: 1, loss: 2.30259, trainAcc: 0.1, testAcc: 0.1, examplesPerSec: 99.94, seconds: 12.25 },
 *   { epochs: 10 },
 * );
 * assert.ok(line === "epoch 1/10: loss 2.303, train acc 0.100, test acc 0.100, 99.9 examples/sec, 12.3 s");
 * ```
 */
export function formatEpoch(record: EpochRecord, options: { epochs: number }): string {
  return `epoch ${record.epoch}/${options.epochs}: ${formatMetrics(record)}, ` +
    `${record.examplesPerSec.toFixed(1)} examples/sec, ${record.seconds.toFixed(1)} s`;
}

/**
 * d2l's summary line: `loss 0.335, train acc 0.877, test acc 0.871`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatMetrics } from "./report.ts";
 *
 * assert.ok(
 *   formatMetrics({ loss: 0.3351, trainAcc: 0.8774, testAcc: 0.871 }) ===
 *     "loss 0.335, train acc 0.877, test acc 0.871",
 * );
 * ```
 */
export function formatMetrics(record: Pick<EpochRecord, "loss" | "trainAcc" | "testAcc">): string {
  return `loss ${record.loss.toFixed(3)}, train acc ${record.trainAcc.toFixed(3)}, ` +
    `test acc ${record.testAcc.toFixed(3)}`;
}

/**
 * A duration for humans: `42 s`, `7 min 05 s`, `3 h 12 min`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatDuration } from "./report.ts";
 *
 * assert.ok(formatDuration(425) === "7 min 05 s");
 * assert.ok(formatDuration(11520) === "3 h 12 min");
 * ```
 */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  const minutes = Math.round(s / 60);
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

/**
 * The history as JSON Lines, one object per epoch (the `--metrics` file).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { historyToJsonl } from "./report.ts";
 *
 * const text = historyToJsonl([
 *   { epoch: 1, loss: 2.3, trainAcc: 0.1, testAcc: 0.1, examplesPerSec: 100, seconds: 12 },
 * ]);
 * assert.ok(JSON.parse(text.trim()).epoch === 1);
 * ```
 */
export function historyToJsonl(history: readonly EpochRecord[]): string {
  return history.map((record) => JSON.stringify(record) + "\n").join("");
}

/**
 * Per-class accuracy as a table: class, examples, correct, accuracy.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatPerClass } from "./report.ts";
 *
 * const text = formatPerClass([[3, 1], [0, 4]], ["cat", "dog"]);
 * assert.equal(text.split("\n")[1], "cat           4        3     0.750");
 * ```
 */
export function formatPerClass(confusion: readonly number[][], names: readonly string[]): string {
  const width = Math.max(5, ...names.map((n) => n.length));
  const lines = [`${"class".padEnd(width)}  examples  correct  accuracy`];
  confusion.forEach((row, label) => {
    const count = row.reduce((a, b) => a + b, 0);
    const accuracy = count === 0 ? "-" : (row[label] / count).toFixed(3);
    lines.push(
      `${names[label].padEnd(width)}  ${String(count).padStart(8)}  ${
        String(row[label]).padStart(7)
      }` +
        `  ${accuracy.padStart(8)}`,
    );
  });
  return lines.join("\n");
}

/**
 * The confusion matrix as text: rows are true classes, columns predictions
 * (headed by the first four letters of each class name).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatConfusion } from "./report.ts";
 *
 * const text = formatConfusion([[3, 1], [0, 4]], ["cat", "dog"]);
 * assert.equal(text, "true \\ predicted  cat  dog\ncat                 3    1\ndog                 0    4");
 * ```
 */
export function formatConfusion(confusion: readonly number[][], names: readonly string[]): string {
  const width = Math.max("true \\ predicted".length, ...names.map((n) => n.length));
  const cell = Math.max(5, ...confusion.flat().map((n) => String(n).length + 1));
  const header = "true \\ predicted".padEnd(width) +
    names.map((n) => n.slice(0, 4).padStart(cell)).join("");
  const rows = confusion.map((row, label) =>
    names[label].padEnd(width) + row.map((n) => String(n).padStart(cell)).join("")
  );
  return [header, ...rows].join("\n");
}

/** Minutes of training past which, on a software adapter, the command names one that finishes. */
export const LONG_RUN_MINUTES = 15;

/**
 * What to say on a software adapter (no GPU) once a run's duration is
 * estimated: `undefined` when it ends within {@linkcode LONG_RUN_MINUTES},
 * else a note naming the runs that learn in minutes on a CPU (measured on 2
 * cores: docs/performance.md), with a worker count this machine can run side
 * by side.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { longRunAdvice } from "./report.ts";
 *
 * assert.equal(longRunAdvice({ seconds: 600, cores: 2 }), undefined);
 * assert.match(longRunAdvice({ seconds: 3600 * 93, cores: 2 })!, /--preset quick --workers 2/);
 * ```
 */
export function longRunAdvice(run: { seconds: number; cores: number }): string | undefined {
  if (run.seconds <= LONG_RUN_MINUTES * 60) return undefined;
  const workers = Math.max(1, Math.min(run.cores, 4));
  return `note: that is more than ${LONG_RUN_MINUTES} min without a GPU. Runs that learn on a CPU: ` +
    `\`deno task train --preset quick --workers ${workers}\` (NiN at 99 px: test accuracy about ` +
    `0.8 in about 6 min on 2 cores) or \`deno task train --model lenet --workers ${workers} ` +
    `--epochs 1 --train-limit 30000 --optimizer adam --lr 0.01\` (about 0.68 in about a minute)`;
}

/**
 * What to say when more workers than cores would share a software adapter:
 * each worker's device runs on CPU cores, so extra workers take turns and add
 * no speed (measured: 4 workers on 2 cores run at the speed of 2).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { workersAdvice } from "./report.ts";
 *
 * assert.equal(workersAdvice({ workers: 2, cores: 2, software: true }), undefined);
 * assert.match(workersAdvice({ workers: 4, cores: 2, software: true })!, /--workers 2/);
 * ```
 */
export function workersAdvice(
  run: { workers: number; cores: number; software: boolean },
): string | undefined {
  if (!run.software || run.workers <= run.cores) return undefined;
  return `note: ${run.workers} workers share ${run.cores} core(s) on a software adapter: the extra ` +
    `workers take turns and add no speed; --workers ${run.cores} is as fast here`;
}
