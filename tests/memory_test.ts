/**
 * A run the machine cannot hold is refused before anything is built: one
 * line with the estimate and the limit, exit code 2, and a peak memory of the
 * refused process far below what the run would have taken.
 *
 * @module
 */

import assert from "node:assert/strict";
import { encodeCheckpoint, readCheckpoint } from "../lib/train/shared/checkpoint.ts";
import { ROOT, scriptArgs, scriptEnv, withTempDir, writeTinyDataset } from "./helpers.ts";
import { ignoredWithout } from "./skips.ts";
import { train } from "../lib/train/coordinator/train.ts";
import { imageLikeDataset } from "./helpers.ts";

/** Runs `scripts/train.ts` under GNU time; its exit code, stderr and peak resident memory. */
async function trainMeasured(args: string[]) {
  const { code, stderr } = await new Deno.Command("/usr/bin/time", {
    args: ["-f", "peak-rss-kib %M", Deno.execPath(), ...scriptArgs("scripts/train.ts", args)],
    cwd: ROOT,
    clearEnv: true,
    env: scriptEnv(),
    stderr: "piped",
    stdout: "null",
  }).output();
  const text = new TextDecoder().decode(stderr);
  const peak = Number(text.match(/^peak-rss-kib (\d+)$/m)?.[1]) * 1024;
  const lines = text.split("\n").filter((line) =>
    line !== "" && !line.startsWith("peak-rss-kib") && !line.startsWith("note: ") &&
    !line.startsWith("Command exited")
  );
  return {
    code: code === 0 ? 0 : Number(text.match(/exited with non-zero status (\d+)/)?.[1] ?? code),
    lines,
    peak,
  };
}

const GiB = 2 ** 30;

Deno.test({
  name:
    "configurations the machine cannot hold are refused before anything is built, in one line, under 1 GiB",
  ignore: await ignoredWithout("gnu-time"),
  async fn(t) {
    await withTempDir(async (dir) => {
      await writeTinyDataset(dir, { train: 32, test: 8 });
      const data = [`--data-dir=${dir}`, "--no-download"];
      const cases: [string, string[], RegExp][] = [
        [
          "256 workers",
          ["--workers=256", "--batch-size=256", "--preset=quick"],
          /^error: this run needs at least [\d.]+ GiB \(256 worker\(s\) × \d+ MiB; .*\), more than the [\d.]+ GiB available: at most \d+ worker\(s\) fit; use fewer workers/,
        ],
        [
          "a NiN of width 50",
          ["--width=50"],
          /^error: this run needs at least [\d.]+ GiB \(1 worker\(s\) × [\d.]+ GiB; activations [\d.]+ GiB each; weights and their copies [\d.]+ GiB each; .*\), more than the [\d.]+ GiB available/,
        ],
        [
          "an input of 100,000 px",
          ["--input-size=100000"],
          /^error: this run needs at least [\d.]+ GiB .*activations [\d.]+ GiB each.*more than the [\d.]+ GiB available/,
        ],
      ];
      for (const [name, args, message] of cases) {
        await t.step(name, async () => {
          const run = await trainMeasured([...args, ...data]);
          assert.equal(run.code, 2, run.lines.join("\n"));
          assert.equal(run.lines.length, 1, run.lines.join("\n"));
          assert.match(run.lines[0], message);
          assert.ok(run.peak < GiB, `peak RSS ${(run.peak / 2 ** 20).toFixed(0)} MiB`);
        });
      }
      await t.step(
        "a checkpoint recording width 50: refused by its weight count, not built",
        async () => {
          const ckpt = `${dir}/ckpt`;
          await train({
            model: { name: "nin", inputSize: 67, width: 0.125 },
            batchSize: 16,
            epochs: 1,
            data: { train: imageLikeDataset(32, 1), test: imageLikeDataset(8, 2) },
            checkpoint: { dir: ckpt },
          });
          const path = `${ckpt}/ckpt-0001-000000.msgpack`;
          const state = await readCheckpoint(path);
          const model = state.config.model;
          const edited = {
            ...state,
            config: {
              ...state.config,
              model: { ...model, options: { ...model.options, width: 50 } },
            },
          };
          await Deno.writeFile(path, await encodeCheckpoint(edited)); // fresh checksums
          const run = await trainMeasured([`--resume=${path}`, "--epochs=2", ...data]);
          assert.equal(run.code, 2, run.lines.join("\n"));
          assert.deepEqual(run.lines, [
            `error: ${path} holds 36646 weights, but nin as it records it has 4861299430: it is not a checkpoint of that model`,
          ]);
          assert.ok(run.peak < GiB, `peak RSS ${(run.peak / 2 ** 20).toFixed(0)} MiB`);
        },
      );
    });
  },
});
