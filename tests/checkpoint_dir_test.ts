/**
 * A checkpoint directory holds one run at a time, and a save that cannot be
 * written says where and why: two runs started at once on one directory,
 * a lock left by a killed run, a full disk.
 *
 * @module
 */

import assert from "node:assert/strict";
import { InterruptedError, UsageError } from "../lib/errors.ts";
import { LOCK_FILE, LOCK_STALE_MS } from "../lib/train/coordinator/dir_lock.ts";
import { train } from "../lib/train/coordinator/train.ts";
import { listCheckpoints } from "../lib/train/shared/checkpoint.ts";
import type { TrainOptions } from "../lib/train/shared/options.ts";
import { imageLikeDataset, runScript, withTempDir, writeTinyDataset } from "./helpers.ts";
import { ignoredWithout } from "./skips.ts";

const RUN: TrainOptions = {
  model: { name: "nin", inputSize: 67, width: 0.125, dropout: 0 },
  batchSize: 16,
  epochs: 2,
  data: { train: imageLikeDataset(32, 1), test: imageLikeDataset(8, 2) },
};

async function entries(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir), (e) => e.name)).sort();
}

Deno.test("a second run on a directory in use is refused with one line naming the holder; the lock goes with the run", async () => {
  await withTempDir(async (dir) => {
    let second: unknown;
    await train({
      ...RUN,
      checkpoint: { dir },
      onStep: async ({ epoch, step }) => {
        if (epoch !== 1 || step !== 1) return;
        assert.deepEqual(await entries(dir), [LOCK_FILE]);
        // Started while the first runs, with --overwrite even: still refused, nothing touched.
        second = await train({ ...RUN, checkpoint: { dir, overwrite: true } }).catch((e) => e);
      },
    });
    assert.ok(second instanceof UsageError, String(second));
    assert.match(
      second.message,
      new RegExp(
        `^checkpoint directory ${dir} is in use by run [0-9a-f-]{36} \\(process ${Deno.pid} on .+, since \\d{4}-\\d\\d-\\d\\dT[^)]+\\): wait for it to end, use another directory, or remove ${dir}/\\.lock if that run is gone$`,
      ),
    );
    // The first run's two epochs are there, and its lock is gone.
    assert.deepEqual(await entries(dir), ["ckpt-0001-000000.msgpack", "ckpt-0002-000000.msgpack"]);
  });
});

Deno.test("the lock is released however the run ends: interrupted, failed", async () => {
  await withTempDir(async (dir) => {
    const stop = new AbortController();
    await assert.rejects(
      train({
        ...RUN,
        checkpoint: { dir },
        signal: stop.signal,
        onStep: ({ step }) => step === 2 && stop.abort(),
      }),
      InterruptedError,
    );
    assert.ok(!(await entries(dir)).includes(LOCK_FILE));
    await assert.rejects(
      train({ ...RUN, checkpoint: { dir, resume: true }, lr: 0.5 }), // not the checkpoint's lr
      /was trained with lr 0\.1, not 0\.5/,
    );
    assert.ok(!(await entries(dir)).includes(LOCK_FILE));
    // And the next run takes the directory.
    await train({ ...RUN, checkpoint: { dir, resume: true } });
    assert.equal((await listCheckpoints(dir)).at(-1)?.epochsDone, 2);
  });
});

Deno.test("a lock its run stopped touching (a killed run) is taken over; a live one is not", async () => {
  await withTempDir(async (dir) => {
    const lock = `${dir}/${LOCK_FILE}`;
    const holder = {
      runId: "killed-run",
      pid: 4242,
      host: "node-7",
      since: "2026-12-01T00:00:00Z",
    };
    await Deno.writeTextFile(lock, JSON.stringify(holder));
    // Touched within the stale limit: a live run's lock, whatever host it names.
    await assert.rejects(
      train({ ...RUN, epochs: 1, checkpoint: { dir } }),
      /is in use by run killed-run \(process 4242 on node-7, since 2026-12-01T00:00:00Z\)/,
    );
    assert.deepEqual(JSON.parse(await Deno.readTextFile(lock)), holder);
    // Untouched for longer than the limit: its run was killed.
    const past = new Date(Date.now() - LOCK_STALE_MS - 1000);
    await Deno.utime(lock, past, past);
    await train({ ...RUN, epochs: 1, checkpoint: { dir } });
    assert.deepEqual(await entries(dir), ["ckpt-0001-000000.msgpack"]);
  });
});

Deno.test("two command-line runs started at once on one directory: exactly one trains, the other is told who holds it", async () => {
  await withTempDir(async (dir) => {
    await writeTinyDataset(dir, { train: 32, test: 8 });
    const flags = [
      "--preset=quick",
      "--input-size=67",
      "--batch-size=16",
      "--epochs=1",
      `--data-dir=${dir}`,
      `--checkpoint-dir=${dir}/ckpt`,
    ];
    const [a, b] = await Promise.all([
      runScript("scripts/train.ts", flags),
      runScript("scripts/train.ts", flags),
    ]);
    const codes = [a.code, b.code].sort();
    assert.deepEqual(codes, [0, 2], `${a.stderr}\n${b.stderr}`);
    const refused = a.code === 2 ? a : b;
    assert.match(
      refused.stderr,
      /^error: checkpoint directory .*ckpt is in use by run [0-9a-f-]{36} \(process \d+ on .+\): wait for it to end/m,
    );
    assert.equal(refused.stderr.trim().split("\n").length, 1, refused.stderr);
    assert.deepEqual(await entries(`${dir}/ckpt`), ["ckpt-0001-000000.msgpack"]);
  });
});

Deno.test({
  name:
    "a full disk during a save: one line naming the file, its size and the directory; nothing half-written, the lock released",
  ignore: await ignoredWithout("tmpfs"),
  async fn() {
    await withTempDir(async (dir) => {
      await writeTinyDataset(dir, { train: 32, test: 8 });
      const small = `${dir}/small`;
      await Deno.mkdir(small);
      // 64 KiB: room for the lock and the write probe, not for a 150 KB checkpoint.
      const mounted = await new Deno.Command("mount", {
        args: ["-t", "tmpfs", "-o", "size=64k", "tmpfs", small],
      }).output();
      assert.ok(mounted.success, new TextDecoder().decode(mounted.stderr));
      try {
        const { code, stderr } = await runScript("scripts/train.ts", [
          "--preset=quick",
          "--input-size=67",
          "--batch-size=16",
          "--epochs=1",
          `--data-dir=${dir}`,
          `--checkpoint-dir=${small}`,
        ]);
        assert.equal(code, 2, stderr);
        assert.match(
          stderr,
          new RegExp(
            `^error: cannot write checkpoint ckpt-0001-000000\\.msgpack \\(\\d+ bytes\\) in ${small}: No space left on device`,
            "m",
          ),
        );
        assert.deepEqual(await entries(small), [], "no checkpoint, no .partial, no lock left");
      } finally {
        await new Deno.Command("umount", { args: [small] }).output();
      }
    });
  },
});
