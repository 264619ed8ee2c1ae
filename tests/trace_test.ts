/**
 * `trace` / `--trace FILE`: a Chrome trace of a few steps, with every
 * worker's host phases and its GPU kernels timed by WebGPU timestamp
 * queries; the kernels account for the device time measured around them.
 */

import assert from "node:assert/strict";
import { UsageError } from "../lib/errors.ts";
import { train } from "../lib/train/coordinator/train.ts";
import type { TraceEvent } from "../lib/util/trace_events.ts";
import { imageLikeDataset, withTempDir } from "./helpers.ts";
import { ignoredWithout } from "./skips.ts";

const RUN = {
  // Width ¼: on llvmpipe a pass costs about 0.1 ms around its kernel, which the kernels of a
  // narrower NiN barely outweigh (measured: kernels 82–93% of the device time at width ⅛,
  // 90–96% at ¼).
  model: { name: "nin", inputSize: 67, width: 0.25 },
  // 4 steps of 32 images per worker.
  data: { train: imageLikeDataset(256, 1), test: imageLikeDataset(16, 2) },
  batchSize: 64,
  epochs: 1,
  lr: 0.05,
  seed: 1,
} as const;

interface TraceFile {
  traceEvents: (TraceEvent | { ph: "M"; pid: number; tid: number; args: { name: string } })[];
  otherData: { notes: string[] };
}

async function tracedRun(
  options: {
    workers: number;
    backend?: "cpu" | "webgpu";
    steps: number;
    model?: "lenet";
    examples?: number;
  },
): Promise<{ trace: TraceFile; spans: TraceEvent[] }> {
  let trace: TraceFile | undefined;
  await withTempDir(async (dir) => {
    const file = `${dir}/trace.json`;
    await train({
      ...RUN,
      ...(options.model ? { model: options.model } : {}),
      ...(options.examples
        ? { data: { ...RUN.data, train: imageLikeDataset(options.examples, 1) } }
        : {}),
      backend: options.backend ?? "webgpu",
      distributed: { workers: options.workers },
      trace: { file, steps: options.steps },
    });
    trace = JSON.parse(await Deno.readTextFile(file)) as TraceFile;
  });
  const spans = trace!.traceEvents.filter((e): e is TraceEvent => e.ph === "X");
  return { trace: trace!, spans };
}

const HOST_PHASES = [
  "gather",
  "upload",
  "forward/backward enqueue",
  "device wait",
  "read-back",
  "all-reduce",
  "weight upload",
];

Deno.test({
  name:
    "a trace of 3 steps on 2 workers: host phases, and kernels that add up to the device time around them",
  ignore: await ignoredWithout("timestamp-query"),
  fn: async () => {
    const { trace, spans } = await tracedRun({ workers: 2, steps: 3 });
    assert.deepEqual(trace.otherData.notes, []);
    const rows = trace.traceEvents.filter((e) => e.ph === "M").map((e) =>
      `${e.pid}/${e.tid} ${e.args.name}`
    );
    for (const pid of [0, 1]) {
      assert.ok(
        rows.includes(`${pid}/0 worker ${pid}`) && rows.includes(`${pid}/1 device`),
        rows.join(),
      );
      const mine = spans.filter((e) => e.pid === pid);
      // Steps 2–4: the first step, which compiles the shaders, is left out.
      const steps = mine.filter((e) => e.tid === 0 && e.name.startsWith("epoch ")).map((e) =>
        e.name
      );
      assert.deepEqual(steps, ["epoch 1, step 2", "epoch 1, step 3", "epoch 1, step 4"]);
      for (const phase of [...HOST_PHASES, "optimizer (its chunk)"]) {
        assert.equal(
          mine.filter((e) => e.tid === 0 && e.name === phase).length,
          3,
          `${phase} of worker ${pid}`,
        );
      }
      for (const step of steps) {
        const hostStep = mine.find((e) => e.tid === 0 && e.name === step)!;
        const kernels = mine.filter((e) => e.tid === 1 && e.args?.step === step);
        const buffers = mine.filter((e) => e.tid === 2 && e.args?.step === step);
        assert.ok(kernels.length > 50, `${kernels.length} kernels`);
        assert.ok(
          kernels.some((k) => k.name === "Conv2DProgram"),
          "our convolution kernel is among them",
        );
        const ms = (events: TraceEvent[]) =>
          events.reduce((sum, e) => sum + (e.args!.durationMs as number), 0);
        const [kernelMs, deviceMs] = [ms(kernels), ms(buffers)];
        // Within 20% of the device time measured around them (each command buffer's first and
        // last timestamps), and never more.
        assert.ok(
          kernelMs >= 0.8 * deviceMs && kernelMs <= deviceMs,
          `worker ${pid}, ${step}: kernels ${kernelMs.toFixed(1)} ms of ${deviceMs.toFixed(1)} ms`,
        );
        // The device clock agrees with the host's: its time fits in the step as the host saw it.
        assert.ok(
          deviceMs <= 1.05 * hostStep.dur / 1000,
          `device ${deviceMs.toFixed(1)} ms in a ${hostStep.dur / 1000} ms step`,
        );
        for (const kernel of kernels) {
          const buffer = buffers[kernel.args!.commandBuffer as number];
          assert.ok(
            kernel.ts >= buffer.ts - 1 && kernel.ts + kernel.dur <= buffer.ts + buffer.dur + 1,
            `${kernel.name} lies in its command buffer`,
          );
        }
      }
    }
  },
});

Deno.test("on the cpu backend the trace holds the host phases and says that no kernels were timed", async () => {
  const { trace, spans } = await tracedRun({
    workers: 1,
    backend: "cpu",
    steps: 1,
    model: "lenet",
    examples: 128, // 2 steps: the second is traced
  });
  assert.deepEqual(trace.otherData.notes, ["worker 0: the cpu backend has no GPU kernels to time"]);
  for (const phase of [...HOST_PHASES, "optimizer"]) {
    assert.equal(spans.filter((e) => e.name === phase).length, 1, phase);
  }
  assert.equal(spans.filter((e) => e.tid !== 0).length, 0);
});

Deno.test("trace options are checked before anything starts", async () => {
  await assert.rejects(
    train({ ...RUN, trace: { file: "t.json", steps: 0 } }),
    (e: unknown) =>
      e instanceof UsageError &&
      e.message === "trace steps must be an integer from 1 to 100, got 0",
  );
  await assert.rejects(
    train({ ...RUN, trace: "/nonexistent/dir/trace.json" }),
    (e: unknown) =>
      e instanceof UsageError &&
      /^cannot write the trace to \/nonexistent\/dir\/trace\.json: /.test(e.message),
  );
});
