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
