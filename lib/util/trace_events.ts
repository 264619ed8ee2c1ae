/**
 * Chrome trace event files (the JSON format Perfetto and `chrome://tracing`
 * open): complete events (`"ph": "X"`, a name, a start and a duration in
 * microseconds) on named processes and threads.
 *
 * @module
 */

/** One complete event: something that ran from `ts` for `dur` microseconds. */
export interface TraceEvent {
  /** What ran, e.g. `"forward/backward enqueue"` or a kernel's name. */
  name: string;
  /** Its category, e.g. `"host"` or `"gpu"`. */
  cat: string;
  /** Always `"X"`: a complete event. */
  ph: "X";
  /** Start, microseconds since the Unix epoch. */
  ts: number;
  /** Duration in microseconds. */
  dur: number;
  /** The process row it is drawn in (a worker). */
  pid: number;
  /** The thread row within it (host, GPU). */
  tid: number;
  /** Anything else to show with it. */
  args?: Record<string, unknown>;
}

/** A metadata event naming a process or thread row. */
interface NameEvent {
  name: "process_name" | "thread_name";
  ph: "M";
  pid: number;
  tid: number;
  args: { name: string };
}

/**
 * Collects the events of one process row (one worker): spans on its host
 * thread and on its device, in milliseconds of `performance.now()`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TraceRecorder } from "./trace_events.ts";
 *
 * const trace = new TraceRecorder({ pid: 1, name: "worker 1" });
 * trace.span("optimizer", 10, 12.5, { tid: TraceRecorder.HOST });
 * const [event] = trace.events;
 * assert.equal(event.dur, 2500);
 * assert.equal(event.ts, Math.round((performance.timeOrigin + 10) * 1000));
 * ```
 */
export class TraceRecorder {
  /** The thread row of the host's phases. */
  static readonly HOST = 0;
  /** The thread row of the device's kernels. */
  static readonly DEVICE = 1;
  /** The events so far. */
  readonly events: TraceEvent[] = [];
  readonly #pid: number;
  readonly #name: string;

  /** A recorder for process row `pid`, shown as `name`. */
  constructor(options: { pid: number; name: string }) {
    this.#pid = options.pid;
    this.#name = options.name;
  }

  /** Records `name` from `startMs` to `endMs` (`performance.now()` times) on row `tid`. */
  span(
    name: string,
    startMs: number,
    endMs: number,
    options: { tid: number; cat?: string; args?: Record<string, unknown> },
  ): void {
    this.events.push({
      name,
      cat: options.cat ?? (options.tid === TraceRecorder.DEVICE ? "gpu" : "host"),
      ph: "X",
      ts: Math.round((performance.timeOrigin + startMs) * 1000),
      dur: Math.max(0, Math.round((endMs - startMs) * 1000)),
      pid: this.#pid,
      tid: options.tid,
      ...(options.args ? { args: options.args } : {}),
    });
  }

  /** The metadata events that name this recorder's rows. */
  names(): NameEvent[] {
    const pid = this.#pid;
    return [
      { name: "process_name", ph: "M", pid, tid: 0, args: { name: this.#name } },
      { name: "thread_name", ph: "M", pid, tid: TraceRecorder.HOST, args: { name: "host" } },
      { name: "thread_name", ph: "M", pid, tid: TraceRecorder.DEVICE, args: { name: "device" } },
    ];
  }
}

/**
 * The JSON object of a trace file: `events` (and the rows' names), sorted by
 * start, with `notes` kept beside them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { chromeTrace } from "./trace_events.ts";
 *
 * const file = chromeTrace([], { notes: ["no GPU timestamps"] });
 * assert.deepEqual(file.traceEvents, []);
 * assert.equal(file.displayTimeUnit, "ms");
 * ```
 */
export function chromeTrace(
  events: readonly (TraceEvent | NameEvent)[],
  options: { notes?: readonly string[] } = {},
): {
  traceEvents: (TraceEvent | NameEvent)[];
  displayTimeUnit: "ms";
  otherData: { notes: string[] };
} {
  const start = (e: TraceEvent | NameEvent) => ("ts" in e ? e.ts : -Infinity);
  return {
    traceEvents: [...events].sort((a, b) => start(a) - start(b)),
    displayTimeUnit: "ms",
    otherData: { notes: [...(options.notes ?? [])] },
  };
}

export type { NameEvent };
