/**
 * A worker's part of `--trace`: for a few steps, its host phases (gather,
 * upload, forward/backward enqueue, device wait, read-back, all-reduce,
 * optimizer, weight upload) and every GPU kernel with its duration from
 * WebGPU timestamp queries (`GpuTimer`), as Chrome trace events on the
 * worker's own row; sent to the coordinator, which writes the file.
 *
 * Device times are placed on the host's clock by putting the start of each
 * traced step's first command buffer at the moment the host submitted it
 * (the device may start a little later: kernels can look early by the queue's
 * latency, never late).
 *
 * @module
 */

import type { TraceMessage } from "../shared/protocol.ts";
import { TraceRecorder } from "../../util/trace_events.ts";
import { GpuTimer } from "./gpu_timer.ts";

/** The row of the device's command buffers: how long the device spent on each. */
const COMMAND_BUFFERS = 2;

/** Records the traced steps of one worker. */
export class StepTracer {
  readonly #recorder: TraceRecorder;
  readonly #timer: GpuTimer | undefined;
  readonly #notes: string[] = [];
  readonly #rank: number;
  #stepStarted = 0;
  /** Steps traced so far. */
  traced = 0;

  /**
   * A tracer for worker `rank` on the active backend (`backend` names it, for
   * the note when kernels cannot be timed).
   */
  constructor(options: { rank: number; backend: string; adapter: string }) {
    this.#rank = options.rank;
    this.#recorder = new TraceRecorder({ pid: options.rank, name: `worker ${options.rank}` });
    this.#timer = GpuTimer.install();
    if (this.#timer === undefined) {
      this.#notes.push(
        options.backend === "webgpu"
          ? `worker ${options.rank}: ${options.adapter} offers no timestamp-query; GPU kernels ` +
            `are not timed, the host's "device wait" shows the device's time`
          : `worker ${options.rank}: the ${options.backend} backend has no GPU kernels to time`,
      );
    }
  }

  /** Records a host phase of the current step. */
  readonly phase = (name: string, startMs: number, endMs: number, args?: Record<string, unknown>) =>
    this.#recorder.span(name, startMs, endMs, { tid: TraceRecorder.HOST, args });

  /** A traced step begins: the device's kernels from now on are timed. */
  startStep(): void {
    this.#stepStarted = performance.now();
    this.#timer?.start();
  }

  /**
   * The traced step `label` has ended on the host: waits for the device,
   * then records the step, its command buffers and its kernels.
   */
  async endStep(label: string): Promise<void> {
    const ended = performance.now();
    this.phase(label, this.#stepStarted, ended);
    this.traced++;
    const times = await this.#timer?.stop();
    if (times === undefined || times.commandBuffers.length === 0) return;
    const first = times.commandBuffers[0];
    const host = (deviceMs: number) => first.submittedMs + (deviceMs - first.startMs);
    const device = (name: string, startMs: number, endMs: number, tid: number, args: object) =>
      this.#recorder.span(name, host(startMs), host(endMs), { tid, cat: "gpu", args: { ...args } });
    times.commandBuffers.forEach((buffer, index) => {
      device("command buffer", buffer.startMs, buffer.endMs, COMMAND_BUFFERS, {
        index,
        step: label,
        durationMs: buffer.endMs - buffer.startMs,
      });
    });
    for (const kernel of times.kernels) {
      device(kernel.name, kernel.startMs, kernel.endMs, TraceRecorder.DEVICE, {
        commandBuffer: kernel.commandBuffer,
        step: label,
        durationMs: kernel.endMs - kernel.startMs,
      });
    }
    if (times.untimed > 0) {
      this.#notes.push(
        `worker ${this.#rank}, ${label}: ${times.untimed} kernels past the query set's room were not timed`,
      );
    }
  }

  /** Everything recorded, for the coordinator. */
  message(): TraceMessage {
    const names = [
      ...this.#recorder.names(),
      {
        name: "thread_name" as const,
        ph: "M" as const,
        pid: this.#rank,
        tid: COMMAND_BUFFERS,
        args: { name: "device: command buffers" },
      },
    ];
    return {
      type: "trace",
      rank: this.#rank,
      events: this.#recorder.events,
      names,
      notes: this.#notes,
    };
  }
}
