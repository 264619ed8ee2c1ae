import assert from "node:assert/strict";
import { decode, encode } from "npm:@msgpack/msgpack@3.1.3";
import { DataError, UsageError } from "../lib/errors.ts";
import {
  decodeCheckpoint,
  encodeCheckpoint,
  latestCheckpoint,
  listCheckpoints,
  readCheckpoint,
  type TrainingState,
  writeCheckpoint,
} from "../lib/train/shared/checkpoint.ts";
import { findResumePoint, resumedOptions } from "../lib/train/coordinator/resume.ts";
import { sha256Hex } from "../lib/util/sha256.ts";
import { CheckpointStore } from "../lib/train/coordinator/checkpoint_store.ts";
import { LOCK_FILE } from "../lib/train/coordinator/dir_lock.ts";
import { withTempDir } from "./helpers.ts";

async function state(epochsDone: number, stepsDone: number): Promise<TrainingState> {
  const weights = Float32Array.from(
    { length: 1000 },
    (_, i) => Math.sin(i + epochsDone + stepsDone),
  );
  return {
    config: {
      workers: 2,
      epochs: 3,
      batchSize: 16,
      lr: 0.1,
      seed: 4,
      backend: "webgpu",
      allReduce: "shared",
      model: {
        name: "nin",
        options: { inputSize: 67, width: 0.125, dropout: 0.5, seed: 4, init: "he-normal" },
      },
      trainLimit: 64,
      testLimit: undefined,
    },
    epochsDone,
    stepsDone,
    weights,
    weightsChecksum: await sha256Hex(weights),
    optimizer: { name: "sgd", lr: 0.1 },
    rng: { seed: 4 },
    history: Array.from({ length: epochsDone }, (_, i) => ({
      epoch: i + 1,
      loss: 2.2,
      trainAcc: 0.2,
      testAcc: 0.25,
      examplesPerSec: 40,
      seconds: 10,
    })),
    // The sums of the steps done in the epoch in progress (batch 16).
    partial: stepsDone > 0
      ? { lossSum: 20.5, correct: 3, count: 16, trainSeconds: 1.25, seconds: 1.5 }
      : { lossSum: 0, correct: 0, count: 0, trainSeconds: 0, seconds: 0 },
    totals: { examples: epochsDone * 64, trainSeconds: epochsDone * 9 },
  };
}

const rejectsWith = (pattern: RegExp) => (e: unknown) =>
  e instanceof DataError && pattern.test(e.message) && !e.message.includes("\n");

Deno.test("a checkpoint round-trips every field, bit for bit", async () => {
  const original = await state(1, 7);
  const back = await decodeCheckpoint(await encodeCheckpoint(original), { name: "mem" });
  assert.deepEqual(back, original);
});

Deno.test("corrupt, truncated and foreign checkpoints are rejected with the file and the reason", async (t) => {
  const bytes = await encodeCheckpoint(await state(0, 3));
  await t.step("one flipped byte in the payload", async () => {
    const corrupt = bytes.slice();
    corrupt[corrupt.length - 100] ^= 0x40;
    await assert.rejects(
      decodeCheckpoint(corrupt, { name: "a.msgpack" }),
      rejectsWith(
        /^a\.msgpack: checksum mismatch \(stored [0-9a-f]{64}, computed [0-9a-f]{64}\): the file is corrupt$/,
      ),
    );
  });
  await t.step("truncated", async () => {
    await assert.rejects(
      decodeCheckpoint(bytes.subarray(0, bytes.length / 2), { name: "b.msgpack" }),
      rejectsWith(/^b\.msgpack: not a checkpoint, or truncated/),
    );
  });
  await t.step("another format version", async () => {
    const outer = decode(bytes) as Record<string, unknown>;
    const future = encode({ ...outer, version: 99 });
    await assert.rejects(
      decodeCheckpoint(future, { name: "c.msgpack" }),
      rejectsWith(/^c\.msgpack: checkpoint format version 99, but this library reads version 1$/),
    );
  });
  await t.step("not a checkpoint at all", async () => {
    await assert.rejects(
      decodeCheckpoint(encode({ hello: "world" }), { name: "d.msgpack" }),
      rejectsWith(/^d\.msgpack: not a checkpoint, or truncated \(no checkpoint header\)$/),
    );
  });
  await t.step("weights that do not match their own checksum", async () => {
    const s = await state(0, 1);
    const tampered = await encodeCheckpoint({ ...s, weightsChecksum: "0".repeat(64) });
    await assert.rejects(
      decodeCheckpoint(tampered, { name: "e.msgpack" }),
      rejectsWith(/^e\.msgpack: the weights do not match their checksum$/),
    );
  });
});

Deno.test("writeCheckpoint writes atomically and deletes nothing", async () => {
  await withTempDir(async (dir) => {
    for (const [e, s] of [[0, 2], [1, 0]]) await writeCheckpoint(dir, await state(e, s));
    assert.deepEqual(await names(dir), ["ckpt-0000-000002.msgpack", "ckpt-0001-000000.msgpack"]);
    const read = await readCheckpoint(`${dir}/ckpt-0001-000000.msgpack`);
    assert.equal(read.stepsDone, 0);
  });
});

/** The names in `dir`, sorted. */
/** The files in `dir`, but the lock of the run that holds it (tested on its own, below). */
async function names(dir: string): Promise<string[]> {
  const found = [];
  for await (const entry of Deno.readDir(dir)) if (entry.name !== LOCK_FILE) found.push(entry.name);
  return found.sort();
}

/** `state(e, s)` of run `runId`. */
async function ofRun(runId: string, e: number, s: number): Promise<TrainingState> {
  return { ...(await state(e, s)), runId };
}

Deno.test("a checkpoint store prunes only its own run's verified checkpoints", async (t) => {
  await t.step("keeps the newest K of its own", async () => {
    await withTempDir(async (dir) => {
      await using store = await CheckpointStore.open(dir, { runId: "a", keep: 2, resuming: false });
      for (const [e, s] of [[0, 2], [0, 4], [1, 0], [1, 2]]) {
        await store.save(await ofRun("a", e, s));
      }
      assert.deepEqual(await names(dir), ["ckpt-0001-000000.msgpack", "ckpt-0001-000002.msgpack"]);
    });
  });
  await t.step(
    "a newer garbage file is neither counted nor deleted; the good ones stay",
    async () => {
      await withTempDir(async (dir) => {
        const first = await CheckpointStore.open(dir, { runId: "a", keep: 1, resuming: false });
        await first.save(await ofRun("a", 1, 0));
        await first.close(); // the run ends
        await Deno.writeTextFile(`${dir}/ckpt-0009-000000.msgpack`, "garbage");
        // --resume --epochs 3 --keep 1: resumes from epoch 1, saves epochs 2 and 3.
        await using resumed = await CheckpointStore.open(dir, {
          runId: "a",
          keep: 1,
          resuming: true,
        });
        await resumed.save(await ofRun("a", 2, 0));
        const last = await resumed.save(await ofRun("a", 3, 0));
        assert.deepEqual(await names(dir), [
          "ckpt-0003-000000.msgpack",
          "ckpt-0009-000000.msgpack",
        ]);
        assert.equal((await readCheckpoint(last)).epochsDone, 3);
        const point = await findResumePoint(true, { dir });
        assert.equal(point?.state.epochsDone, 3, "the next --resume finds the good checkpoint");
      });
    },
  );
  await t.step("another run's checkpoints are not pruned by a resumed run", async () => {
    await withTempDir(async (dir) => {
      await writeCheckpoint(dir, await ofRun("other", 0, 4));
      await writeCheckpoint(dir, await ofRun("a", 1, 0));
      await using store = await CheckpointStore.open(dir, { runId: "a", keep: 1, resuming: true });
      await store.save(await ofRun("a", 2, 0));
      assert.deepEqual(await names(dir), ["ckpt-0000-000004.msgpack", "ckpt-0002-000000.msgpack"]);
    });
  });
});

Deno.test("a fresh run refuses a directory holding another run's checkpoints, unless told to overwrite", async (t) => {
  const refusal =
    /^checkpoint directory .* holds 2 checkpoint\(s\) of another run \(newest ckpt-0001-000000\.msgpack\): continue that run with --resume, choose another --checkpoint-dir, or pass --overwrite/;
  await t.step("refused: nothing written or deleted", async () => {
    await withTempDir(async (dir) => {
      await writeCheckpoint(dir, await ofRun("other", 0, 4));
      await writeCheckpoint(dir, await ofRun("other", 1, 0));
      const before = await Promise.all((await names(dir)).map((n) => Deno.readFile(`${dir}/${n}`)));
      await assert.rejects(
        CheckpointStore.open(dir, { runId: "a", keep: 1, resuming: false }),
        (e: unknown) => e instanceof UsageError && refusal.test(e.message),
      );
      const after = await Promise.all((await names(dir)).map((n) => Deno.readFile(`${dir}/${n}`)));
      assert.deepEqual(after, before);
    });
  });
  await t.step("with overwrite: the others go once the first checkpoint is written", async () => {
    await withTempDir(async (dir) => {
      await writeCheckpoint(dir, await ofRun("other", 0, 4));
      await writeCheckpoint(dir, await ofRun("other", 1, 0));
      await using store = await CheckpointStore.open(dir, {
        runId: "a",
        keep: 1,
        resuming: false,
        overwrite: true,
      });
      assert.equal((await names(dir)).length, 2, "nothing deleted before this run has saved");
      await store.save(await ofRun("a", 0, 2));
      assert.deepEqual(await names(dir), ["ckpt-0000-000002.msgpack"]);
      assert.equal((await readCheckpoint(`${dir}/ckpt-0000-000002.msgpack`)).runId, "a");
    });
  });
  await t.step("a directory named like a checkpoint is found before any work", async () => {
    await withTempDir(async (dir) => {
      await Deno.mkdir(`${dir}/ckpt-0001-000000.msgpack`);
      await assert.rejects(
        CheckpointStore.open(dir, { runId: "a", keep: 1, resuming: false, overwrite: true }),
        /^UsageError: checkpoint directory .* holds ckpt-0001-000000\.msgpack, which is not a regular file but is named like a checkpoint: remove or rename it$/,
      );
    });
  });
});

Deno.test("opening a checkpoint store proves the directory writable and sweeps killed saves' temporary files", async (t) => {
  await t.step("a file given as the directory", async () => {
    await withTempDir(async (dir) => {
      await Deno.writeTextFile(`${dir}/README.md`, "not a directory");
      await assert.rejects(
        CheckpointStore.open(`${dir}/README.md`, { runId: "a", keep: 1, resuming: false }),
        /^UsageError: checkpoint directory .*README\.md cannot be created: it exists and is not a directory$/,
      );
    });
  });
  await t.step("a directory that cannot be written", async () => {
    // /sys: writable by nobody, root included; without --allow-all Deno keeps it out of reach too.
    await assert.rejects(
      CheckpointStore.open("/sys", { runId: "a", keep: 1, resuming: false }),
      /^UsageError: checkpoint directory \/sys cannot be (written|created): /,
    );
  });
  await t.step("a .partial left by a kill is removed; other files stay", async () => {
    await withTempDir(async (dir) => {
      await Deno.writeTextFile(`${dir}/.ckpt-0001-000000.msgpack.4242-0123abcd.partial`, "half");
      await Deno.writeTextFile(`${dir}/.notes.4242-0123abcd.partial`, "not ours");
      await (await CheckpointStore.open(dir, { runId: "a", keep: 1, resuming: false })).close();
      assert.deepEqual(await names(dir), [".notes.4242-0123abcd.partial"]);
    });
  });
});

Deno.test("the newest usable checkpoint is used when newer ones are corrupt; all kept on disk", async () => {
  await withTempDir(async (dir) => {
    await writeCheckpoint(dir, await state(1, 0));
    const newest = await writeCheckpoint(dir, await state(1, 4));
    const bytes = await Deno.readFile(newest);
    await Deno.writeFile(newest, bytes.subarray(0, 100)); // e.g. the disk filled up
    const latest = await latestCheckpoint(dir);
    assert.equal(latest.path, `${dir}/ckpt-0001-000000.msgpack`);
    assert.equal(latest.state?.epochsDone, 1);
    assert.equal(latest.skipped.length, 1);
    assert.match(
      latest.skipped[0].reason,
      /ckpt-0001-000004\.msgpack: not a checkpoint, or truncated/,
    );
    const point = await findResumePoint(true, { dir });
    assert.equal(point?.state.stepsDone, 0);
    assert.equal((await listCheckpoints(dir)).length, 2, "nothing was deleted");
  });
});

Deno.test("resuming needs a usable checkpoint, and the settings that shape the result", async () => {
  await withTempDir(async (dir) => {
    assert.equal(await findResumePoint(true, { dir }), undefined); // fresh start
    await Deno.writeTextFile(`${dir}/ckpt-0000-000001.msgpack`, "garbage");
    await assert.rejects(
      findResumePoint(true, { dir }),
      rejectsWith(/^no usable checkpoint in .*: .*ckpt-0000-000001\.msgpack: not a checkpoint/),
    );
    await assert.rejects(
      findResumePoint(`${dir}/missing.msgpack`, {}),
      rejectsWith(/cannot read checkpoint/),
    );
  });
  const point = { path: "run.msgpack", state: await state(1, 2), skipped: [] };
  const options = resumedOptions(point, { epochs: 5, distributed: { workers: 4 } });
  assert.equal(options.epochs, 5);
  assert.equal(options.distributed?.workers, 4);
  assert.equal((options.model as { width: number }).width, 0.125);
  assert.equal(options.seed, 4);
  assert.equal(resumedOptions(point, {}).epochs, 3);
  assert.throws(
    () => resumedOptions(point, { model: { name: "nin", width: 0.25 } }),
    (e: unknown) =>
      e instanceof UsageError &&
      /^run\.msgpack was trained with width 0\.125, not 0\.25: leave width out to resume, or start a new run$/
        .test(e.message),
  );
  assert.throws(() => resumedOptions(point, { lr: 0.05 }), /trained with lr 0\.1, not 0\.05/);
});

Deno.test("checkpoint reads are bounded by the file: no device or FIFO, no size field trusted", async (t) => {
  await t.step("a device is refused before reading", async () => {
    await assert.rejects(
      readCheckpoint("/dev/zero"),
      (e: unknown) =>
        e instanceof DataError && e.message === "checkpoint /dev/zero is not a regular file",
    );
  });
  await t.step("a directory is refused", async () => {
    await withTempDir(async (dir) => {
      await assert.rejects(readCheckpoint(dir), /is not a regular file$/);
    });
  });
  await t.step("an array header declaring 4 billion elements in 5 bytes", async () => {
    const bytes = new Uint8Array([0xdd, 0xff, 0xff, 0xff, 0xff]); // array32, 2^32 − 1 elements
    await assert.rejects(
      decodeCheckpoint(bytes, { name: "lying.msgpack" }),
      /^DataError: lying\.msgpack: not a checkpoint, or truncated \(Max length exceeded: array length \(4294967295\) > maxArrayLength \(5\)\)$/,
    );
  });
});

Deno.test("a checkpoint whose checksums hold but whose contents make no sense is rejected with the reason", async (t) => {
  const cases: [string, (s: Record<string, unknown>) => void, RegExp][] = [
    ["no config", (s) => delete s.config, /config is missing or not an object$/],
    [
      "a negative epoch count",
      (s) => s.epochsDone = -5,
      /epochsDone -5 is not a count of at most 3$/,
    ],
    ["more epochs done than planned", (s) => s.epochsDone = 7, /epochsDone 7 is not a count/],
    ["a fractional step", (s) => s.stepsDone = 2.5, /stepsDone 2\.5 is not a count$/],
    [
      "a zero batch size",
      (s) => (s.config as { batchSize: number }).batchSize = 0,
      /config: batch size must be a positive integer, got 0$/,
    ],
    [
      "an unknown backend",
      (s) => (s.config as { backend: string }).backend = "cuda",
      /config: backend must be one of webgpu, cpu, got "cuda"$/,
    ],
    [
      "history shorter than the epochs done",
      (s) => s.history = [],
      /history does not hold one record per epoch done \(1\)$/,
    ],
    [
      "another optimizer",
      (s) => s.optimizer = { name: "adam", lr: 0.1 },
      /optimizer is not sgd at the run's learning rate$/,
    ],
    [
      "an optimizer state that does not fit the run's optimizer",
      (s) =>
        s.optimizer = {
          name: "sgd",
          lr: 0.1,
          state: { step: 3, slots: { m: new Float32Array(2) } },
        },
      /optimizer state has slots \[m\], expected \[\]$/,
    ],
    [
      "momentum of the wrong length",
      (s) => {
        (s.config as Record<string, unknown>).optimizer = { name: "sgd", momentum: 0.9 };
        s.optimizer = {
          name: "sgd",
          lr: 0.1,
          state: { step: 3, slots: { momentum: new Float32Array(2) } },
        };
      },
      /optimizer slot momentum does not hold 1000 float32 values$/,
    ],
    [
      "non-finite momentum",
      (s) => {
        (s.config as Record<string, unknown>).optimizer = { name: "sgd", momentum: 0.9 };
        const momentum = new Float32Array(1000).fill(NaN, 1, 2);
        s.optimizer = { name: "sgd", lr: 0.1, state: { step: 3, slots: { momentum } } };
      },
      /optimizer slot momentum is not all finite$/,
    ],
    [
      "an unknown optimizer in the settings",
      (s) => (s.config as Record<string, unknown>).optimizer = { name: "lion" },
      /config: optimizer: name must be one of sgd, adam/,
    ],
    // Sums a run could not have produced: a resumed run would report them.
    [
      "negative correct predictions",
      (s) => (s.partial as Record<string, number>).correct = -1000,
      /partial\.correct -1000 is not a count of at most partial\.count$/,
    ],
    [
      "more examples than the steps done hold",
      (s) => (s.partial as Record<string, number>).count = 33, // 2 steps of batch 16
      /partial\.count 33 is not a count of at most the 32 examples of 2 step\(s\)$/,
    ],
    [
      "an infinite loss sum",
      (s) => (s.partial as Record<string, number>).lossSum = Infinity,
      /partial is not the sums of an epoch in progress$/,
    ],
    [
      "a test accuracy above 1",
      (s) => (s.history as Record<string, number>[])[0].testAcc = 1.5,
      /history record 1 is malformed or out of range$/,
    ],
    [
      "negative seconds",
      (s) => (s.totals as Record<string, number>).trainSeconds = -1,
      /totals are malformed or out of range$/,
    ],
  ];
  for (const [name, change, reason] of cases) {
    await t.step(name, async () => {
      const good = await state(1, 2) as unknown as Record<string, unknown>;
      change(good);
      const bytes = await encodeCheckpoint(good as unknown as TrainingState);
      await assert.rejects(
        decodeCheckpoint(bytes, { name: "x.msgpack" }),
        (e: unknown) =>
          e instanceof DataError && e.message.startsWith("x.msgpack: invalid checkpoint: ") &&
          reason.test(e.message),
      );
    });
  }
  await t.step("NaN weights with a matching checksum", async () => {
    const bad = await state(1, 2);
    bad.weights[7] = NaN;
    bad.weightsChecksum = await sha256Hex(bad.weights);
    await assert.rejects(
      decodeCheckpoint(await encodeCheckpoint(bad), { name: "x.msgpack" }),
      /x\.msgpack: invalid checkpoint: the weights are not all finite$/,
    );
  });
});
