/**
 * The training curves as an SVG image, drawn the way d2l's `Animator` draws
 * them: train loss, train acc and test acc against the epoch.
 *
 * @module
 */

import type { EpochRecord } from "../shared/options.ts";

/** Options for {@linkcode renderHistorySvg}. */
export interface PlotOptions {
  /** Right end of the epoch axis, so a partial run shows the whole range. Default: last epoch. */
  epochs?: number;
  /** Title above the plot. */
  title?: string;
}

const WIDTH = 560;
const HEIGHT = 360;
const MARGIN = { left: 56, right: 150, top: 36, bottom: 48 };
const SERIES = [
  { key: "loss", label: "train loss", color: "#1f77b4", dash: "" },
  { key: "trainAcc", label: "train acc", color: "#bf00bf", dash: "8 4" },
  { key: "testAcc", label: "test acc", color: "#008000", dash: "8 3 2 3" },
] as const;

/**
 * Renders `history` as a standalone SVG document.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderHistorySvg } from "./plot.ts";
 *
 * const svg = renderHistorySvg([
 *   { epoch: 1, loss: 1.2, trainAcc: 0.55, testAcc: 0.7, examplesPerSec: 100, seconds: 10 },
 *   { epoch: 2, loss: 0.6, trainAcc: 0.78, testAcc: 0.8, examplesPerSec: 100, seconds: 10 },
 * ], { epochs: 10 });
 * assert.ok(svg.startsWith("<svg") && svg.includes("test acc"));
 * ```
 */
export function renderHistorySvg(
  history: readonly EpochRecord[],
  options: PlotOptions = {},
): string {
  const lastEpoch = Math.max(options.epochs ?? 0, ...history.map((r) => r.epoch), 2);
  const xMin = 1;
  const yMax = niceCeiling(Math.max(1, ...history.map((r) => r.loss).filter(Number.isFinite)));
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const x = (epoch: number) => MARGIN.left + ((epoch - xMin) / (lastEpoch - xMin)) * plotW;
  const y = (value: number) => MARGIN.top + plotH - (Math.min(value, yMax) / yMax) * plotH;
  const parts: string[] = [];
  parts.push(svgStart(WIDTH, HEIGHT, 12));
  if (options.title) {
    parts.push(
      `<text x="${MARGIN.left + plotW / 2}" y="20" text-anchor="middle" font-size="13">${
        escapeXml(options.title)
      }</text>`,
    );
  }
  for (const tick of xTicks(lastEpoch)) {
    const px = x(tick).toFixed(1);
    parts.push(
      `<line x1="${px}" y1="${MARGIN.top}" x2="${px}" y2="${
        MARGIN.top + plotH
      }" stroke="#e5e5e5"/>`,
      `<text x="${px}" y="${MARGIN.top + plotH + 16}" text-anchor="middle">${tick}</text>`,
    );
  }
  for (let i = 0; i <= 5; i++) {
    const value = (yMax * i) / 5;
    const py = y(value).toFixed(1);
    parts.push(
      `<line x1="${MARGIN.left}" y1="${py}" x2="${
        MARGIN.left + plotW
      }" y2="${py}" stroke="#e5e5e5"/>`,
      `<text x="${MARGIN.left - 6}" y="${py}" dy="4" text-anchor="end">${
        Number(value.toFixed(2))
      }</text>`,
    );
  }
  parts.push(
    `<rect x="${MARGIN.left}" y="${MARGIN.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`,
    `<text x="${MARGIN.left + plotW / 2}" y="${HEIGHT - 10}" text-anchor="middle">epoch</text>`,
  );
  SERIES.forEach((series, i) => {
    const points = history
      .filter((r) => Number.isFinite(r[series.key]))
      .map((r) => `${x(r.epoch).toFixed(1)},${y(r[series.key]).toFixed(1)}`);
    const dash = series.dash ? ` stroke-dasharray="${series.dash}"` : "";
    if (points.length > 1) {
      parts.push(
        `<polyline points="${
          points.join(" ")
        }" fill="none" stroke="${series.color}" stroke-width="2"${dash}/>`,
      );
    }
    for (const point of points) {
      const [cx, cy] = point.split(",");
      parts.push(`<circle cx="${cx}" cy="${cy}" r="2.5" fill="${series.color}"/>`);
    }
    const ly = MARGIN.top + 14 + i * 20;
    const lx = MARGIN.left + plotW + 14;
    parts.push(
      `<line x1="${lx}" y1="${ly}" x2="${
        lx + 30
      }" y2="${ly}" stroke="${series.color}" stroke-width="2"${dash}/>`,
      `<text x="${lx + 38}" y="${ly}" dy="4">${series.label}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

function xTicks(lastEpoch: number): number[] {
  const step = Math.max(1, Math.ceil(lastEpoch / 10));
  const ticks: number[] = [];
  for (let epoch = 1; epoch <= lastEpoch; epoch += step) ticks.push(epoch);
  return ticks;
}

function niceCeiling(value: number): number {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const factor of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) {
    if (value <= factor * magnitude) return factor * magnitude;
  }
  return 10 * magnitude;
}

/** The opening `<svg>` tag and a white background. */
function svgStart(width: number, height: number, fontSize: number): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="${fontSize}">\n` +
    `<rect width="${width}" height="${height}" fill="white"/>`;
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * A confusion matrix as an SVG heat map: rows are true classes, columns
 * predictions; each cell shows its count, shaded by its share of the row.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderConfusionSvg } from "./plot.ts";
 *
 * const svg = renderConfusionSvg([[8, 2], [1, 9]], { labels: ["cat", "dog"], title: "test set" });
 * assert.ok(svg.startsWith("<svg") && svg.includes(">9</text>") && svg.includes("predicted"));
 * ```
 */
export function renderConfusionSvg(
  confusion: readonly number[][],
  options: { labels: readonly string[]; title?: string },
): string {
  const n = confusion.length;
  const cellSize = 44;
  const left = 110;
  const top = 60;
  const width = left + n * cellSize + 20;
  const height = top + n * cellSize + 90;
  const parts = [svgStart(width, height, 11)];
  if (options.title) {
    parts.push(
      `<text x="${width / 2}" y="22" text-anchor="middle" font-size="13">${
        escapeXml(options.title)
      }</text>`,
    );
  }
  confusion.forEach((row, r) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    row.forEach((count, c) => {
      const share = count / total;
      const x = left + c * cellSize;
      const y = top + r * cellSize;
      const shade = Math.round(255 - share * 200);
      const textColor = share > 0.5 ? "white" : "black";
      parts.push(
        `<rect x="${x}" y="${y}" width="${cellSize}" height="${cellSize}" ` +
          `fill="rgb(${shade},${shade},255)" stroke="#ccc"/>`,
        `<text x="${x + cellSize / 2}" y="${y + cellSize / 2 + 4}" text-anchor="middle" ` +
          `fill="${textColor}">${count}</text>`,
      );
    });
    parts.push(
      `<text x="${left - 6}" y="${top + r * cellSize + cellSize / 2 + 4}" text-anchor="end">${
        escapeXml(options.labels[r])
      }</text>`,
    );
  });
  options.labels.forEach((label, c) => {
    const x = left + c * cellSize + cellSize / 2;
    const y = top + n * cellSize + 8;
    parts.push(
      `<text x="${x}" y="${y}" text-anchor="end" transform="rotate(-45 ${x} ${y})">${
        escapeXml(label)
      }</text>`,
    );
  });
  parts.push(
    `<text x="${left + (n * cellSize) / 2}" y="${
      height - 8
    }" text-anchor="middle">predicted</text>`,
    `<text x="14" y="${top + (n * cellSize) / 2}" text-anchor="middle" ` +
      `transform="rotate(-90 14 ${top + (n * cellSize) / 2})">true class</text>`,
    "</svg>",
  );
  return parts.join("\n") + "\n";
}
