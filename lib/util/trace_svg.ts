/**
 * A picture of a Chrome trace (as `--trace` writes it): one row per thread of
 * each process (a worker's host, its device, its command buffers), every
 * complete event a bar on a shared time axis, labelled where it is wide
 * enough. For docs and for a first look where Perfetto is not at hand.
 *
 * @module
 */

import type { TraceEvent } from "./trace_events.ts";

/** The parts of a trace file this reads. */
export interface TraceFileLike {
  traceEvents: readonly (
    | TraceEvent
    | { name: string; ph: "M"; pid: number; tid: number; args: { name: string } }
  )[];
}

const ROW = 22;
const GUTTER = 210;
const AXIS = 44;

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** A stable colour for an event name. */
function colour(name: string): string {
  let hash = 0;
  for (const char of name) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360}, 55%, ${62 + (hash >> 9) % 16}%)`;
}

/**
 * The SVG of `trace`, `width` pixels wide, with `title` above it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { traceSvg } from "./trace_svg.ts";
 *
 * const svg = traceSvg({
 *   traceEvents: [
 *     { name: "thread_name", ph: "M", pid: 0, tid: 0, args: { name: "host" } },
 *     { name: "upload", cat: "host", ph: "X", ts: 0, dur: 2000, pid: 0, tid: 0 },
 *     { name: "optimizer", cat: "host", ph: "X", ts: 3000, dur: 1000, pid: 0, tid: 0 },
 *   ],
 * }, { title: "two phases" });
 * assert.equal(svg.match(/<rect class="event"/g)?.length, 2);
 * assert.match(svg, />worker 0 · host</);
 * ```
 */
export function traceSvg(trace: TraceFileLike, options: { title: string; width?: number }): string {
  const width = options.width ?? 1600;
  const names = new Map<string, string>();
  for (const e of trace.traceEvents) {
    if (e.ph === "M" && e.name === "thread_name") names.set(`${e.pid}/${e.tid}`, e.args.name);
  }
  const events = trace.traceEvents.filter((e): e is TraceEvent => e.ph === "X");
  const rows = [...new Set(events.map((e) => `${e.pid}/${e.tid}`))].sort((a, b) => {
    const [pa, ta] = a.split("/").map(Number), [pb, tb] = b.split("/").map(Number);
    return pa - pb || ta - tb;
  });
  const start = Math.min(...events.map((e) => e.ts));
  const end = Math.max(...events.map((e) => e.ts + e.dur));
  const span = Math.max(1, end - start);
  const x = (ts: number) => GUTTER + ((ts - start) / span) * (width - GUTTER - 10);
  // Nested host phases (a step, the phases inside it) share a row: deeper ones drawn lower.
  const depthOf = new Map<TraceEvent, number>();
  for (const row of rows) {
    const open: TraceEvent[] = [];
    for (const e of events.filter((e) => `${e.pid}/${e.tid}` === row).sort((a, b) => a.ts - b.ts)) {
      while (open.length > 0 && open.at(-1)!.ts + open.at(-1)!.dur <= e.ts) open.pop();
      depthOf.set(e, Math.min(open.length, 2));
      open.push(e);
    }
  }
  const height = AXIS + rows.length * ROW * 2 + 20;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="10">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="8" y="16" font-size="13">${escape(options.title)}</text>`,
  ];
  const step = 10 ** Math.floor(Math.log10(span / 1000 / 4)) * 1000; // µs between ticks, ~4–40
  for (let t = 0; t <= span; t += step) {
    parts.push(
      `<line x1="${x(start + t)}" y1="${AXIS - 6}" x2="${x(start + t)}" y2="${
        height - 16
      }" stroke="#eee"/>`,
      `<text x="${x(start + t) + 2}" y="${AXIS - 8}" fill="#666">${
        (t / 1000).toFixed(0)
      } ms</text>`,
    );
  }
  rows.forEach((row, r) => {
    const top = AXIS + r * ROW * 2;
    const pid = row.split("/")[0];
    parts.push(
      `<text x="8" y="${top + 14}">${escape(`worker ${pid} · ${names.get(row) ?? row}`)}</text>`,
    );
  });
  for (const e of events) {
    const r = rows.indexOf(`${e.pid}/${e.tid}`);
    const top = AXIS + r * ROW * 2 + depthOf.get(e)! * (ROW * 2 / 3);
    const [left, right] = [x(e.ts), x(e.ts + e.dur)];
    const w = Math.max(0.5, right - left);
    const label = e.name.length * 5.5 < w
      ? `<text x="${left + 2}" y="${top + 10}">${escape(e.name)}</text>`
      : "";
    parts.push(
      `<rect class="event" x="${left.toFixed(2)}" y="${top}" width="${w.toFixed(2)}" height="${
        ROW * 2 / 3 - 1
      }" fill="${colour(e.name)}"><title>${escape(e.name)} ${
        (e.dur / 1000).toFixed(3)
      } ms</title></rect>${label}`,
    );
  }
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}
