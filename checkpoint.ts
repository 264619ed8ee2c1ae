/**
 * Reading the checkpoints `train()` writes with `checkpoint: { dir }`: one
 * self-describing file per save, `ckpt-EEEE-SSSSSS.msgpack` after the epochs
 * and steps done, verified by checksum and checked field by field when read.
 * A checkpoint is data (see SECURITY.md): reading one never runs code.
 *
 * @example The newest usable checkpoint of a run, and where it stands
 * ```ts ignore
 * import { latestCheckpoint } from "./checkpoint.ts";
 *
 * const { path, state, skipped } = await latestCheckpoint("out/ckpt");
 * if (state) console.log(path, state.epochsDone, state.stepsDone, state.history.at(-1));
 * for (const { reason } of skipped) console.error(`passed over ${reason}`);
 * ```
 *
 * @module
 */

export {
  type CheckpointFile,
  type EpochSums,
  latestCheckpoint,
  listCheckpoints,
  readCheckpoint,
  type RunConfig,
  type TrainingState,
} from "./lib/train/shared/checkpoint.ts";
export type { OptimizerState } from "./lib/optim/mod.ts";
export type {
  EpochRecord,
  LrSchedule,
  ModelConfig,
  Normalization,
  OptimizerConfig,
  OptimizerName,
} from "./mod.ts";
