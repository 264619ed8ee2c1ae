import assert from "node:assert/strict";
import { renderHistorySvg } from "../lib/train/coordinator/plot.ts";
import {
  formatDuration,
  formatEpoch,
  formatMetrics,
  historyToJsonl,
} from "../lib/train/coordinator/report.ts";
import { ProgressBar, type ProgressSink } from "../lib/util/progress.ts";

function sink(terminal: boolean): ProgressSink & { text(): string } {
  const chunks: Uint8Array[] = [];
  return {
    writeSync: (bytes) => chunks.push(bytes.slice()) && bytes.length,
    isTerminal: () => terminal,
    text: () => chunks.map((c) => new TextDecoder().decode(c)).join(""),
  };
}

const HISTORY = [
  { epoch: 1, loss: 2.2, trainAcc: 0.2, testAcc: 0.35, examplesPerSec: 50, seconds: 30 },
  { epoch: 2, loss: 1.1, trainAcc: 0.6, testAcc: 0.66, examplesPerSec: 52, seconds: 29 },
  { epoch: 3, loss: 0.7, trainAcc: 0.74, testAcc: 0.73, examplesPerSec: 51, seconds: 29 },
];

Deno.test("ProgressBar redraws in place on a terminal and clears itself", () => {
  const out = sink(true);
  const bar = new ProgressBar(4, { label: "epoch 1/2", width: 8, sink: out, intervalMs: 0 });
  bar.update(2, "loss 2.000");
  bar.update(4, "loss 1.000");
  bar.clear();
  const text = out.text();
  assert.ok(text.includes("\r\x1b[Kepoch 1/2 ████░░░░  50% loss 2.000"));
  assert.ok(text.includes("████████ 100% loss 1.000"));
  assert.ok(text.endsWith("\r\x1b[K"));
});

Deno.test("ProgressBar writes occasional plain lines when not on a terminal", () => {
  const out = sink(false);
  const bar = new ProgressBar(10, { label: "epoch 1/1", sink: out, lineIntervalMs: 0 });
  bar.update(5, "loss 1.5");
  bar.update(10, "done"); // the epoch line follows; no 100% line
  bar.clear();
  assert.equal(out.text(), "epoch 1/1 50% loss 1.5\n");
  const quiet = sink(false);
  const slow = new ProgressBar(10, { sink: quiet }); // default: a line every 30 s at most
  slow.update(5);
  assert.equal(quiet.text(), "");
});

Deno.test("epoch and summary lines follow d2l's wording", () => {
  assert.equal(
    formatEpoch(HISTORY[1], { epochs: 10 }),
    "epoch 2/10: loss 1.100, train acc 0.600, test acc 0.660, 52.0 examples/sec, 29.0 s",
  );
  assert.equal(formatMetrics(HISTORY[2]), "loss 0.700, train acc 0.740, test acc 0.730");
  assert.equal(formatDuration(59.4), "59 s");
  assert.equal(formatDuration(3599), "59 min 59 s");
  assert.equal(formatDuration(3600 * 5 + 60 * 7), "5 h 07 min");
});

Deno.test("historyToJsonl writes one JSON object per epoch", () => {
  const lines = historyToJsonl(HISTORY).split("\n");
  assert.equal(lines.pop(), "");
  assert.deepEqual(lines.map((line) => JSON.parse(line)), HISTORY);
});

Deno.test("renderHistorySvg draws the three d2l curves with one point per epoch", () => {
  const svg = renderHistorySvg(HISTORY, { epochs: 10, title: "NiN <quick>" });
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.ok(svg.trimEnd().endsWith("</svg>"));
  const polylines = [...svg.matchAll(/<polyline points="([^"]+)"/g)].map((m) => m[1].split(" "));
  assert.equal(polylines.length, 3);
  for (const points of polylines) assert.equal(points.length, 3);
  // Loss falls, so its y coordinate (downwards in SVG) grows; accuracies rise.
  const ys = (points: string[]) => points.map((p) => Number(p.split(",")[1]));
  const [loss, trainAcc] = polylines.map(ys);
  assert.ok(loss[0] < loss[2]);
  assert.ok(trainAcc[0] > trainAcc[2]);
  assert.ok(svg.includes("NiN &#60;quick&#62;"));
  for (const label of ["train loss", "train acc", "test acc", "epoch"]) {
    assert.ok(svg.includes(label));
  }
});
