/**
 * Test helper for runs that stop part-way, as a user's Ctrl-C stops them.
 *
 * @module
 */

import assert from "node:assert/strict";
import { InterruptedError } from "../lib/errors.ts";
import { train } from "../lib/train/coordinator/train.ts";
import { type CheckpointFile, listCheckpoints } from "../lib/train/shared/checkpoint.ts";
import type { TrainOptions } from "../lib/train/shared/options.ts";

/**
 * Runs `train(options)` with checkpoints in `at.dir`, aborted once step
 * `at.step` of epoch `at.epoch` is done; asserts that it stopped with an
 * `InterruptedError` and returns the newest checkpoint file it left.
 */
export async function trainInterrupted(
  options: TrainOptions,
  at: { epoch: number; step: number; dir: string },
): Promise<CheckpointFile> {
  const interrupt = new AbortController();
  await assert.rejects(
    train({
      ...options,
      checkpoint: { ...options.checkpoint, dir: at.dir },
      signal: interrupt.signal,
      onStep: (p) => {
        if (p.epoch === at.epoch && p.step === at.step) interrupt.abort();
      },
    }),
    InterruptedError,
  );
  const newest = (await listCheckpoints(at.dir)).at(-1);
  assert.ok(newest !== undefined, "the interrupted run left a checkpoint");
  return newest;
}
