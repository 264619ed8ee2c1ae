import assert from "node:assert/strict";
import { decode, encode } from "@msgpack/msgpack";
import { DataError, UsageError } from "../lib/errors.ts";
import {
  checkpointName,
  decodeCheckpoint,
  encodeCheckpoint,
  latestCheckpoint,
  listCheckpoints,
  readCheckpoint,
  type TrainingState,
  writeCheckpoint,
} from "../lib/train/checkpoint.ts";
import { findResumePoint, resumedOptions } from "../lib/train/resume.ts";
import { sha256Hex } from "../lib/util/sha256.ts";
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
      model: { inputSize: 67, width: 0.125, dropout: 0.5, seed: 4, init: "he-normal" },
      trainLimit: 64,
      testLimit: undefined,
    },
    epochsDone,
    stepsDone,
    weights,
    weightsChecksum: await sha256Hex(weights),
    optimizer: { name: "sgd", lr: 0.1 },
    rng: { seed: 4 },
    history: epochsDone === 0 ? [] : [{
      epoch: 1,
      loss: 2.2,
      trainAcc: 0.2,
      testAcc: 0.25,
      examplesPerSec: 40,
      seconds: 10,
    }],
    partial: { lossSum: 20.5, correct: 3, count: 16, trainSeconds: 1.25, seconds: 1.5 },
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

Deno.test("writeCheckpoint writes atomically and keeps the newest K", async () => {
  await withTempDir(async (dir) => {
    for (const [e, s] of [[0, 2], [0, 4], [1, 0], [1, 2]]) {
      await writeCheckpoint(dir, await state(e, s), { keep: 2 });
    }
    const names = [];
    for await (const entry of Deno.readDir(dir)) names.push(entry.name);
    assert.deepEqual(names.sort(), [
      checkpointName({ epochsDone: 1, stepsDone: 0 }),
      checkpointName({ epochsDone: 1, stepsDone: 2 }),
    ]);
    assert.deepEqual((await listCheckpoints(dir)).map((f) => [f.epochsDone, f.stepsDone]), [
      [1, 0],
      [1, 2],
    ]);
    const read = await readCheckpoint(`${dir}/ckpt-0001-000002.msgpack`);
    assert.equal(read.stepsDone, 2);
  });
});

Deno.test("the newest usable checkpoint is used when newer ones are corrupt; all kept on disk", async () => {
  await withTempDir(async (dir) => {
    await writeCheckpoint(dir, await state(1, 0), { keep: 5 });
    const newest = await writeCheckpoint(dir, await state(1, 4), { keep: 5 });
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
    const point = await findResumePoint(true, { checkpointDir: dir });
    assert.equal(point?.state.stepsDone, 0);
    assert.equal((await listCheckpoints(dir)).length, 2, "nothing was deleted");
  });
});

Deno.test("resuming needs a usable checkpoint, and the settings that shape the result", async () => {
  await withTempDir(async (dir) => {
    assert.equal(await findResumePoint(true, { checkpointDir: dir }), undefined); // fresh start
    await Deno.writeTextFile(`${dir}/ckpt-0000-000001.msgpack`, "garbage");
    await assert.rejects(
      findResumePoint(true, { checkpointDir: dir }),
      rejectsWith(/^no usable checkpoint in .*: .*ckpt-0000-000001\.msgpack: not a checkpoint/),
    );
    await assert.rejects(
      findResumePoint(`${dir}/missing.msgpack`, {}),
      rejectsWith(/cannot read checkpoint/),
    );
  });
  const point = { path: "run.msgpack", state: await state(1, 2), skipped: [] };
  const options = resumedOptions(point, { epochs: 5, workers: 4 });
  assert.equal(options.epochs, 5);
  assert.equal(options.workers, 4);
  assert.equal(options.width, 0.125);
  assert.equal(options.seed, 4);
  assert.equal(resumedOptions(point, {}).epochs, 3);
  assert.throws(
    () => resumedOptions(point, { width: 0.25 }),
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
