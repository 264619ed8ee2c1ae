/**
 * Training as several processes on 127.0.0.1, through the command line as a
 * user (or a launcher) starts it: 2 processes × 2 workers end with the bits of
 * 1 process × 4; only rank 0 writes checkpoints and outputs; a wrong token is
 * refused without stopping the job; a killed process is named by the others,
 * which exit non-zero; launch mistakes are usage errors.
 */

import assert from "node:assert/strict";
import {
  imageLikeDataset,
  ROOT,
  runScript,
  scriptArgs,
  scriptEnv,
  withTempDir,
  writeTinyDataset,
} from "./helpers.ts";
import {
  assertReferenceWeights,
  epochLines,
  fileSha,
  loopbackGroup,
  runFlags,
  singleProcessRun,
} from "./process_helpers.ts";
import { train } from "../lib/train/coordinator/train.ts";
import { InterruptedError } from "../lib/errors.ts";

const TOKEN = "multi-process test token";

/** Starts `scripts/train.ts` as process `rank` of `size`; its output is collected as it comes. */
function startRank(
  rank: number,
  job: { size: number; port: number; flags: string[]; token?: string },
) {
  const child = new Deno.Command(Deno.execPath(), {
    args: scriptArgs("scripts/train.ts", [
      ...job.flags,
      `--nnodes=${job.size}`,
      `--node-rank=${rank}`,
      "--master-addr=127.0.0.1",
      `--master-port=${job.port}`,
    ]),
    cwd: ROOT,
    clearEnv: true,
    env: { ...scriptEnv(), DDP_TOKEN: job.token ?? TOKEN, LP_NUM_THREADS: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = { stdout: "", stderr: "" };
  const waiters: {
    key: "stdout" | "stderr";
    pattern: RegExp;
    found: (m: RegExpMatchArray) => void;
  }[] = [];
  const check = () => {
    for (const waiter of [...waiters]) {
      const match = out[waiter.key].match(waiter.pattern);
      if (match) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.found(match);
      }
    }
  };
  const collect = async (stream: ReadableStream<Uint8Array>, key: "stdout" | "stderr") => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      out[key] += text;
      check();
    }
  };
  const done = Promise.all([collect(child.stdout, "stdout"), collect(child.stderr, "stderr")]);
  const finished = async () => {
    const { code } = await child.status;
    await done;
    return { code, ...out };
  };
  /** Resolves with the first match of `pattern` in `key`'s output, as it arrives. */
  const waitFor = (pattern: RegExp, key: "stdout" | "stderr" = "stdout") =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      waiters.push({ key, pattern, found: resolve });
      check();
      done.then(() => reject(new Error(`exited before ${pattern}: ${out.stdout}${out.stderr}`)));
    });
  return { child, out, waitFor, finished };
}

/**
 * Rank 0 of a job of `size` on a port of its own choice (`--master-port=0`),
 * and that port once it says it listens: nothing picks a port and hopes it
 * stays free.
 */
async function startRoot(job: { size: number; flags: string[] }) {
  const zero = startRank(0, { ...job, port: 0 });
  const [, port] = await zero.waitFor(
    /^rank 0: waiting for \d+ process\(es\) at 127\.0\.0\.1:(\d+)$/m,
    "stderr",
  );
  return { zero, port: Number(port) };
}

Deno.test("2 processes × 2 workers end with the weights of 1 process × 4; rank 0 alone writes", async () => {
  await withTempDir(async (dir) => {
    const single = await singleProcessRun(dir, ["--workers=4"]);

    const flags = runFlags(dir, [
      "--workers=2",
      `--export=${dir}/multi`,
      `--metrics=${dir}/metrics.jsonl`,
      `--checkpoint-dir=${dir}/ckpt`,
    ]);
    const root = await startRoot({ size: 2, flags });
    const ranks = [root.zero, startRank(1, { size: 2, port: root.port, flags })];
    const [zero, one] = await Promise.all(ranks.map((r) => r.finished()));
    assert.equal(zero.code, 0, zero.stderr);
    assert.equal(one.code, 0, one.stderr);
    assert.match(zero.stdout, /2 worker\(s\) × 2 processes \(this is rank 0;/);

    // Every process reports the job's metrics; 2 × 2 gives 1 × 4's losses and weights.
    assert.equal(epochLines(zero.stdout).length, 2);
    assert.deepEqual(epochLines(one.stdout), epochLines(zero.stdout));
    assert.deepEqual(epochLines(zero.stdout), epochLines(single.stdout));
    await assertReferenceWeights(dir);
    // One run's checkpoints, one metrics file: rank 1 wrote nothing.
    const files = [...Deno.readDirSync(`${dir}/ckpt`)].map((e) => e.name).sort();
    assert.deepEqual(files.filter((name) => name.endsWith(".msgpack")).length, 2, files.join());
    assert.equal((await Deno.readTextFile(`${dir}/metrics.jsonl`)).trim().split("\n").length, 2);
    assert.doesNotMatch(one.stdout, /model saved/);
    assert.match(zero.stdout, /model saved to/);
  });
});

Deno.test("ResNet-18 with --shards 4: 2 processes × 1 worker end with the weights and statistics of 1 process × 1 worker", async () => {
  await withTempDir(async (dir) => {
    // Batch 10: shards of 3, 3, 2 and 2 examples, each its own term of the average; the
    // batch-normalisation statistics travel with the gradient and are in the export.
    const resnet = (dir: string, extra: string[] = []) => [
      "--model=resnet18",
      "--input-size=28",
      "--width=0.0625",
      "--lr=0.05",
      `--data-dir=${dir}`,
      "--no-download",
      "--epochs=1",
      ...extra,
    ];
    const shards = ["--shards=4", "--batch-size=10"];
    await singleProcessRun(dir, ["--workers=1", ...shards], resnet);
    const flags = resnet(dir, ["--workers=1", ...shards, `--export=${dir}/multi`]);
    const root = await startRoot({ size: 2, flags });
    const ranks = [root.zero, startRank(1, { size: 2, port: root.port, flags })];
    const [zero, one] = await Promise.all(ranks.map((r) => r.finished()));
    assert.equal(zero.code, 0, zero.stderr);
    assert.equal(one.code, 0, one.stderr);
    assert.match(zero.stdout, /batch 10 \(5 per worker in 2 shards\)/);
    await assertReferenceWeights(dir);
  });
});

Deno.test("--wire bf16: 2 processes × 1 worker end with the weights of 1 process × 2 workers (bf16 too), not float32's", async () => {
  await withTempDir(async (dir) => {
    await singleProcessRun(dir, ["--workers=2"]);
    const float32 = await fileSha(`${dir}/single/group1-shard1of1.bin`);
    await singleProcessRun(dir, ["--workers=2", "--wire=bf16"]);
    const flags = runFlags(dir, ["--workers=1", "--wire=bf16", `--export=${dir}/multi`]);
    const root = await startRoot({ size: 2, flags });
    const ranks = [root.zero, startRank(1, { size: 2, port: root.port, flags })];
    const [zero, one] = await Promise.all(ranks.map((r) => r.finished()));
    assert.equal(zero.code, 0, zero.stderr);
    assert.equal(one.code, 0, one.stderr);
    await assertReferenceWeights(dir); // the bits do not depend on the split
    assert.notEqual(
      await fileSha(`${dir}/single/group1-shard1of1.bin`),
      float32,
      "bfloat16 gradients change the weights",
    );
  });
});

Deno.test("a process with a wrong token is refused and the job goes on; a killed process is named", async () => {
  await withTempDir(async (dir) => {
    await writeTinyDataset(dir, { train: 48, test: 16 });
    const flags = runFlags(dir, ["--workers=1", "--epochs=30"]);
    const { zero, port } = await startRoot({ size: 2, flags });
    const impostor = await startRank(1, {
      size: 2,
      port,
      flags,
      token: "not the job's token at all",
    }).finished();
    assert.equal(impostor.code, 1);
    assert.match(impostor.stderr, /^error: .*wrong token/m);
    assert.equal(impostor.stderr.trim().split("\n").length, 1, impostor.stderr);

    const one = startRank(1, { size: 2, port, flags });
    await zero.waitFor(/^epoch 1\//m);
    one.child.kill("SIGKILL");
    const result = await zero.finished();
    await one.child.status;
    assert.equal(result.code, 1);
    assert.match(result.stderr, /rank 0 refused a connection from 127\.0\.0\.1:\d+: .*wrong token/);
    assert.match(result.stderr, /^error: rank 1 \(127\.0\.0\.1:\d+\) closed its connection$/m);
  });
});

Deno.test("launch mistakes are usage errors, before any work", async () => {
  const noAddress = await runScript("scripts/train.ts", ["--nnodes=2", "--node-rank=1"]);
  assert.equal(noAddress.code, 2);
  assert.equal(
    noAddress.stderr.trim(),
    "error: --nnodes needs --master-addr (or MASTER_ADDR): rank 0's host",
  );
  const noToken = await runScript("scripts/train.ts", [
    "--nnodes=2",
    "--node-rank=1",
    "--master-addr=127.0.0.1",
  ]);
  assert.equal(noToken.code, 2);
  assert.match(noToken.stderr.trim(), /^error: a shared token of at least 16 characters is needed/);
  const star = await runScript("scripts/train.ts", [
    "--nnodes=2",
    "--node-rank=0",
    "--master-addr=127.0.0.1",
    "--allreduce=star",
  ], { env: { DDP_TOKEN: TOKEN } });
  assert.equal(star.code, 2);
  assert.equal(
    star.stderr.trim(),
    'error: with several processes the all-reduce is "tcp", got "star"',
  );
  const torchrun = await runScript("scripts/train.ts", [], {
    env: { RANK: "3", WORLD_SIZE: "2", MASTER_ADDR: "x" },
  });
  assert.equal(torchrun.code, 2);
  assert.equal(torchrun.stderr.trim(), 'error: RANK must be a whole number in 0..1, got "3"');
});

Deno.test("SIGTERM to one process stops both at the same step; rank 0's checkpoint resumes both to the uninterrupted bits", async () => {
  await withTempDir(async (dir) => {
    await singleProcessRun(dir, ["--workers=2", "--epochs=6"]);

    const flags = runFlags(dir, [
      "--workers=1",
      "--epochs=6",
      `--checkpoint-dir=${dir}/ckpt`,
      `--export=${dir}/multi`,
    ]);
    const { zero, port } = await startRoot({ size: 2, flags });
    const one = startRank(1, { size: 2, port, flags });
    await one.waitFor(/^epoch 1\//m);
    one.child.kill("SIGTERM"); // rank 1 only: rank 0 must stop at the same step
    const [stopped0, stopped1] = await Promise.all([zero.finished(), one.finished()]);
    assert.equal(stopped1.code, 143, stopped1.stderr);
    assert.equal(stopped0.code, 130, stopped0.stderr);
    const position = (stderr: string) =>
      stderr.match(/interrupted after (\d+) epoch\(s\) and (\d+) step\(s\)/)?.slice(1);
    assert.ok(position(stopped0.stderr), stopped0.stderr);
    assert.deepEqual(position(stopped1.stderr), position(stopped0.stderr));
    assert.match(stopped0.stderr, /checkpoint .*ckpt-/);
    assert.match(stopped1.stderr, /rank 0 writes the checkpoint/);
    assert.match(stopped1.stderr, /no checkpoint written$/m); // rank 1 writes none

    const again = await startRoot({ size: 2, flags: [...flags, "--resume"] });
    const resumed = [
      again.zero,
      startRank(1, { size: 2, port: again.port, flags: [...flags, "--resume"] }),
    ];
    const [done0, done1] = await Promise.all(resumed.map((r) => r.finished()));
    assert.equal(done0.code, 0, done0.stderr);
    assert.equal(done1.code, 0, done1.stderr);
    assert.match(done1.stdout, /resuming from rank 0's .*ckpt-/);
    await assertReferenceWeights(dir);
  });
});

Deno.test("with --max-restarts, a killed process relaunched by its scheduler rejoins and the run ends with the uninterrupted bits", async () => {
  await withTempDir(async (dir) => {
    await singleProcessRun(dir, ["--workers=2", "--epochs=5"]);

    const flags = runFlags(dir, [
      "--workers=1",
      "--epochs=5",
      "--max-restarts=1",
      `--export=${dir}/multi`,
    ]);
    const { zero, port } = await startRoot({ size: 2, flags });
    const one = startRank(1, { size: 2, port, flags });
    await one.waitFor(/^epoch 2\//m);
    one.child.kill("SIGKILL");
    await one.finished();
    const again = startRank(1, { size: 2, port, flags });
    const result = await zero.finished();
    if (result.code !== 0) again.child.kill(); // it would wait for rank 0 to come back
    const relaunched = await again.finished();
    assert.equal(result.code, 0, result.stderr);
    assert.equal(relaunched.code, 0, relaunched.stderr);
    assert.match(
      result.stderr,
      /rank 1 \(127\.0\.0\.1:\d+\) closed its connection; restarting every worker from epoch [23], step 0 \(restart 1 of 1\)/,
    );
    assert.match(relaunched.stdout, /resuming from rank 0's state after its last restart/);
    await assertReferenceWeights(dir);
  });
});

Deno.test("a process whose worker hangs: the other process names it once the step timeout passes", async () => {
  const data = { train: imageLikeDataset(48, 1), test: imageLikeDataset(12, 2) };
  const group = loopbackGroup(2, TOKEN);
  // Two processes' coordinators in this one (each with its own worker thread); the faulty worker
  // hangs on global rank 1, which is process 1's only worker.
  const run = async (rank: number) =>
    await train({
      model: { name: "nin", inputSize: 67, width: 0.125 },
      batchSize: 8,
      epochs: 2,
      data,
      distributed: {
        workers: 1,
        stepTimeout: 8,
        workerUrl: new URL("./fixtures/faulty_worker.ts?fault=hang", import.meta.url),
        processGroup: await group(rank),
      },
    });
  const [zero, one] = await Promise.allSettled([run(0), run(1)]);
  assert.equal(zero.status, "rejected");
  assert.equal(one.status, "rejected");
  // Whichever watchdog fires first, process 0 names process 1 — never its own worker.
  assert.match(
    (zero as PromiseRejectedResult).reason.message,
    /^(no progress for \d+ s, over the step timeout of 8 s: the all-reduce waits for rank 1 \(127\.0\.0\.1:\d+\)|rank 1 \(127\.0\.0\.1:\d+\) stopped: worker 0 failed: no progress .*)$/,
  );
  assert.match((one as PromiseRejectedResult).reason.message, /no progress/);
});

Deno.test("a stop asked for between epochs on one process: both stop at the same step of the next epoch, rank 0 checkpoints", async () => {
  await withTempDir(async (dir) => {
    const data = { train: imageLikeDataset(48, 1), test: imageLikeDataset(12, 2) };
    const group = loopbackGroup(2, TOKEN);
    const stop = new AbortController();
    // Rank 0 is asked to stop in its onEpoch: after the processes exchanged their stop flags at
    // epoch 1's end, before epoch 2 begins. Rank 1 is never asked; it must learn of it.
    const run = async (rank: number) =>
      await train({
        model: { name: "nin", inputSize: 67, width: 0.125 },
        batchSize: 8,
        epochs: 3,
        data,
        signal: rank === 0 ? stop.signal : undefined,
        onEpoch: () => {
          if (rank === 0) stop.abort("SIGINT");
        },
        checkpoint: { dir: `${dir}/ckpt` },
        distributed: {
          workers: 1,
          processGroup: await group(rank),
        },
      });
    const [zero, one] = await Promise.allSettled([run(0), run(1)]);
    const reason = (settled: PromiseSettledResult<unknown>) =>
      settled.status === "rejected" ? settled.reason : new Error("resolved");
    assert.ok(reason(zero) instanceof InterruptedError, String(reason(zero)));
    assert.ok(reason(one) instanceof InterruptedError, String(reason(one)));
    const position = (error: Error) =>
      error.message.match(/after (\d+) epoch\(s\) and (\d+) step/)?.slice(1);
    // Epoch 2's first average carries the flag; the stop takes effect two steps past it.
    assert.deepEqual(position(reason(zero)), ["1", "2"]);
    assert.deepEqual(position(reason(one)), ["1", "2"]);
    assert.match(reason(zero).message, /checkpoint .*ckpt-0001-000002/);
  });
});
