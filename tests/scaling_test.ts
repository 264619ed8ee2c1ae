/**
 * Two workers on a software adapter must run their GPU work concurrently.
 *
 * On a machine without a GPU, WebGPU reaches Mesa's llvmpipe through GL or,
 * with Mesa's Vulkan driver, through Vulkan; through GL the workers' GPU work
 * is serialised and a second worker adds nothing (0.98× measured, against
 * 1.95× through Vulkan). This test compares, in one run, the throughput of two
 * workers with that of one, each worker taking the same batch and one
 * llvmpipe thread — a ratio, not a wall-clock limit — so CI on a fresh
 * machine fails when its set-up leaves WebGPU on a serialising path.
 */

import assert from "node:assert/strict";
import { benchScaling } from "../lib/bench/scaling_bench.ts";
import { adapterWithPath, chooseWebGPUPath } from "../lib/train/coordinator/webgpu_path.ts";
import { ignoredWithout } from "./skips.ts";

const choice = await chooseWebGPUPath();

Deno.test({
  name: "two workers on the software adapter train about twice as fast as one",
  ignore: await ignoredWithout("two-cores-software-adapter"),
  async fn() {
    const previous = Deno.env.get("LP_NUM_THREADS");
    Deno.env.set("LP_NUM_THREADS", "1"); // one llvmpipe thread per worker, two cores for two
    try {
      const device = adapterWithPath({ adapter: choice!.adapter!, path: choice!.path });
      // The fastest window of each: other load on the machine only slows a window down, so the
      // best ones are what the adapter can do (medians fell to 1.25× and 1.39× under load on
      // a concurrent path). Serialised: 0.98–1.25× measured through GL (medians); concurrent:
      // 1.67–2.14× through Vulkan. On a VM whose two cores are at times not independent, whole
      // measurements on the concurrent path fell to 1.38× and 1.42× (2 of 5 runs of this test
      // alone, 2026-12-06) and 1.19× (a CI run): so up to three measurements, and the best
      // counts; a serialised path stays under 1.4× in each.
      const attempts: string[] = [];
      let best = 0;
      for (let attempt = 0; attempt < 3 && best < 1.4; attempt++) {
        const [one, two] = await benchScaling({
          workers: [1, 2],
          inputSize: 67,
          width: 0.25,
          perWorkerBatch: 32, // enough work per step that the device, not JavaScript, dominates
          warmupSteps: 1,
          stepsPerRepeat: 2,
          repeats: 5,
        });
        const speedup = two.imagesPerSec.max / one.imagesPerSec.max;
        best = Math.max(best, speedup);
        attempts.push(
          `${speedup.toFixed(2)}× (${one.imagesPerSec.max.toFixed(1)} → ` +
            `${two.imagesPerSec.max.toFixed(1)} images/s)`,
        );
      }
      assert.ok(
        best >= 1.4,
        `2 workers trained ${attempts.join(", ")} as fast as 1 on ${device} (the best ` +
          `windows of ${attempts.length} measurements): their GPU work does not run concurrently`,
      );
    } finally {
      if (previous === undefined) Deno.env.delete("LP_NUM_THREADS");
      else Deno.env.set("LP_NUM_THREADS", previous);
    }
  },
});
