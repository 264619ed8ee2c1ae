/**
 * A checkpoint is data: loading one never imports code the user did not
 * name, and a file's name tells the truth about its content. The attacker
 * here edits a checkpoint (or drops one into the directory) and recomputes
 * its checksums, which anyone can do.
 *
 * @module
 */

import assert from "node:assert/strict";
import { pathToFileURL } from "node:url";
import { UsageError } from "../lib/errors.ts";
import {
  checkpointName,
  encodeCheckpoint,
  latestCheckpoint,
  type TrainingState,
} from "../lib/train/shared/checkpoint.ts";
import { train } from "../lib/train/coordinator/train.ts";
import { sha256Hex } from "../lib/util/sha256.ts";
import { runScript, withTempDir, writeTinyDataset } from "./helpers.ts";

/** A module that, if anything ever imports it, leaves `marker` behind. */
function evilModule(marker: string): string {
  return `Deno.writeTextFileSync(${JSON.stringify(marker)}, "imported");\n` +
    "export function createModel() { throw new Error('never built'); }\n";
}

/** A valid checkpoint (checksums and all) of a run whose model is the module `url`. */
async function tamperedState(url: string, at = { epochsDone: 1, stepsDone: 0 }) {
  const weights = new Float32Array([0.25, -0.5, 1]);
  const state: TrainingState = {
    runId: crypto.randomUUID(),
    config: {
      workers: 1,
      epochs: 3,
      batchSize: 8,
      lr: 0.1,
      seed: 0,
      backend: "cpu",
      allReduce: "shared",
      model: { name: "custom", module: url, export: "createModel", options: { seed: 0 } },
      trainLimit: undefined,
      testLimit: undefined,
    },
    ...at,
    weights,
    weightsChecksum: await sha256Hex(weights),
    optimizer: { name: "sgd", lr: 0.1 },
    rng: { seed: 0 },
    history: Array.from({ length: at.epochsDone }, (_, i) => ({
      epoch: i + 1,
      loss: 2,
      trainAcc: 0.1,
      testAcc: 0.1,
      examplesPerSec: 1,
      seconds: 1,
    })),
    partial: { lossSum: 0, correct: 0, count: 0, trainSeconds: 0, seconds: 0 },
    totals: { examples: 8, trainSeconds: 1 },
  };
  return state;
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

const ONE_LINE = /^error: \S.*\n$/;

Deno.test("a checkpoint naming a module never imports it: --resume, a dropped file, eval and train() refuse, exit 2", async (t) => {
  await withTempDir(async (dir) => {
    const marker = `${dir}/marker`;
    const evil = `${dir}/evil.ts`;
    // Data is there, so that only the model stands between the checkpoint and a worker.
    const data = `${dir}/data`;
    await Deno.mkdir(data);
    await writeTinyDataset(data);
    await Deno.writeTextFile(evil, evilModule(marker));
    const urls = {
      "a file: URL": pathToFileURL(evil).href,
      "a data: URL": `data:application/typescript;base64,${btoa(evilModule(marker))}`,
    };
    for (const [what, url] of Object.entries(urls)) {
      const ckptDir = `${dir}/ckpt-${what.slice(2, 6)}`;
      await Deno.mkdir(ckptDir);
      const state = await tamperedState(url);
      const file = `${ckptDir}/${checkpointName(state)}`;
      await Deno.writeFile(file, await encodeCheckpoint(state));
      const cases: [string, string, string[]][] = [
        ["train --resume FILE", "scripts/train.ts", ["--backend", "cpu", "--resume", file]],
        [
          "train --resume in the directory",
          "scripts/train.ts",
          ["--backend", "cpu", "--checkpoint-dir", ckptDir, "--resume"],
        ],
        ["eval --checkpoint", "scripts/eval.ts", ["--backend", "cpu", "--checkpoint", file]],
      ];
      for (const [name, script, args] of cases) {
        await t.step(`${what}: ${name}`, async () => {
          const { code, stdout, stderr } = await runScript(script, [
            ...args,
            "--data-dir",
            data,
            "--no-download",
          ]);
          assert.equal(await exists(marker), false, "the checkpoint's module was imported");
          assert.equal(code, 2, stderr);
          assert.match(stderr, ONE_LINE);
          assert.match(stderr, /trained with your own model \(createModel of (file|data):/);
          assert.match(stderr, /give the same model to resume or evaluate it/);
          assert.equal(stdout, "");
          // Nothing was written or removed in the checkpoint directory.
          const names = [];
          for await (const entry of Deno.readDir(ckptDir)) names.push(entry.name);
          assert.deepEqual(names, [checkpointName(state)]);
        });
      }
      await t.step(`${what}: train() with resume`, async () => {
        await assert.rejects(
          train({
            backend: "cpu",
            checkpoint: { dir: ckptDir, resume: true },
            data: { dir: data },
          }),
          (e: unknown) => e instanceof UsageError && /give the same model/.test(e.message),
        );
        assert.equal(await exists(marker), false);
      });
    }
  });
});

Deno.test("resuming a user's model: the module given is compared with the checkpoint's record", async (t) => {
  await withTempDir(async (dir) => {
    const mine = `${dir}/mine.ts`;
    await Deno.writeTextFile(mine, evilModule(`${dir}/marker`));
    const state = await tamperedState(pathToFileURL(`${dir}/theirs.ts`).href);
    const file = `${dir}/${checkpointName(state)}`;
    await Deno.writeFile(file, await encodeCheckpoint(state));
    await t.step("another module: one line naming both, exit 2, nothing imported", async () => {
      const { code, stderr } = await runScript("scripts/train.ts", [
        "--backend",
        "cpu",
        "--resume",
        file,
        "--model",
        `${mine}#createModel`,
      ]);
      assert.equal(code, 2, stderr);
      assert.match(stderr, ONE_LINE);
      assert.match(
        stderr,
        /trained with model createModel of file:.*theirs\.ts, not createModel of file:.*mine\.ts: give that model/,
      );
      assert.equal(await exists(`${dir}/marker`), false);
    });
    await t.step("a built-in name instead: refused the same way", async () => {
      const { code, stderr } = await runScript("scripts/train.ts", [
        "--backend",
        "cpu",
        "--resume",
        file,
        "--model",
        "lenet",
      ]);
      assert.equal(code, 2, stderr);
      assert.match(stderr, /trained with model createModel of .*theirs\.ts, not lenet/);
    });
  });
});

Deno.test("a checkpoint whose name and content disagree is not a candidate", async () => {
  await withTempDir(async (dir) => {
    // Content: epoch 1 done. Name: epoch 9, so that it sorts as the newest.
    const state = await tamperedState("file:///nowhere.ts");
    const lying = `${dir}/${checkpointName({ epochsDone: 9, stepsDone: 0 })}`;
    await Deno.writeFile(lying, await encodeCheckpoint(state));
    const latest = await latestCheckpoint(dir);
    assert.equal(latest.state, undefined);
    assert.deepEqual(latest.skipped.map((s) => s.path), [lying]);
    assert.match(
      latest.skipped[0].reason,
      /its name says 9 epoch\(s\) and 0 step\(s\) done, its content 1 and 0: not a checkpoint this run wrote$/,
    );
    // Through the command line: one line, exit 2.
    const { code, stderr } = await runScript("scripts/train.ts", [
      "--backend",
      "cpu",
      "--checkpoint-dir",
      dir,
      "--resume",
    ]);
    assert.equal(code, 2, stderr);
    assert.match(stderr, /^error: no usable checkpoint in .*its name says 9 epoch/);
  });
});
