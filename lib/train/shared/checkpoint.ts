/**
 * Checkpoints: everything needed to continue a run exactly where it stopped,
 * in one self-describing file.
 *
 * A checkpoint file is a MessagePack map `{ format, version, sha256, payload }`
 * whose `payload` is itself MessagePack bytes — the {@linkcode TrainingState}
 * with the weights as raw little-endian float32 bytes — and `sha256` is the
 * SHA-256 of those bytes. A truncated or altered file fails to decode or to
 * match its checksum and is rejected with the file's name and the reason.
 *
 * Files are named `ckpt-EEEE-SSSSSS.msgpack` after the epochs and steps done,
 * so they sort in training order; they are written through a temporary file,
 * `fsync` and rename, and only the newest `keep` are kept.
 *
 * @module
 */

import type { KernelSet } from "../../kernels/mod.ts";
import type { Normalization } from "../../data/dataset.ts";
import type { DatasetName } from "../../data/registry.ts";
import type {
  LrSchedule,
  OptimizerConfig,
  OptimizerName,
  OptimizerState,
} from "../../optim/mod.ts";
import { basename, join } from "node:path";
import { decode, encode } from "npm:@msgpack/msgpack@3.1.3";
import { DataError } from "../../errors.ts";
import { writeFileAtomic } from "../../util/atomic_write.ts";
import { sha256Hex } from "../../util/sha256.ts";
import { checkpointProblem } from "./checkpoint_schema.ts";
import type { EpochRecord, WireFormat } from "./options.ts";
import type { AllReduceAlgorithm } from "../../collective/registry.ts";
import type { ModelConfig } from "../../model/registry.ts";
import type { BackendName } from "./backend.ts";

/** The `format` field of every checkpoint file. */
export const CHECKPOINT_FORMAT = "deno-ddp-checkpoint";
/** The format version this library writes and reads. */
export const CHECKPOINT_VERSION = 1;

/**
 * The settings that define a run, as a checkpoint records them (flat, as
 * format version 1 has them); a resumed run must keep the ones that shape
 * its results.
 */
export interface RunConfig {
  /** Worker replicas per process. */
  workers: number;
  /** Epochs planned. */
  epochs: number;
  /** Global batch size. */
  batchSize: number;
  /** Base learning rate. */
  lr: number;
  /** Seed. */
  seed: number;
  /** Backend. */
  backend: BackendName;
  /** All-reduce algorithm. */
  allReduce: AllReduceAlgorithm;
  /** The model, its options resolved. */
  model: ModelConfig;
  /** Training examples used, or undefined for all. */
  trainLimit: number | undefined;
  /** Test examples used, or undefined for all. */
  testLimit: number | undefined;
  /** The WebGPU kernel set; absent in checkpoints written before there was a choice. */
  kernels?: KernelSet;
  /** The optimizer; absent in checkpoints written before there was a choice (plain SGD). */
  optimizer?: OptimizerConfig;
  /** The learning-rate schedule; absent in checkpoints written before there was one (constant). */
  schedule?: LrSchedule;
  /** The input normalisation, if any. */
  normalize?: Normalization;
  /** The data set loaded by name; absent in checkpoints written before there was a choice (Fashion-MNIST). */
  dataset?: DatasetName;
  /** Processes in the job, each with `workers` replicas; absent for one. */
  processes?: number;
  /** Shards per global batch, when given (see `DistributedOptions.shards`); absent: one per replica. */
  shards?: number;
  /** `"bf16"` when gradients travelled as bfloat16 (see `DistributedOptions.wire`); absent: float32. */
  wire?: WireFormat;
}

/** Running sums of the epoch in progress, so that a resumed epoch reports exact metrics. */
export interface EpochSums {
  /** Sum of per-example training losses so far. */
  lossSum: number;
  /** Correct training predictions so far. */
  correct: number;
  /** Training examples so far. */
  count: number;
  /** Seconds spent in training steps so far. */
  trainSeconds: number;
  /** Seconds of the epoch so far. */
  seconds: number;
}

/** Where a run stands: what a checkpoint holds. */
export interface TrainingState {
  /**
   * The run's identity: chosen when a run starts, kept when it is resumed;
   * absent in checkpoints written before runs had one.
   */
  runId?: string;
  /** The run's settings. */
  config: RunConfig;
  /** Epochs completed, evaluation included. */
  epochsDone: number;
  /** Steps completed in epoch `epochsDone + 1`. */
  stepsDone: number;
  /** All weights, flattened in `model.getWeights()` order. */
  weights: Float32Array<ArrayBuffer>;
  /** SHA-256 of `weights`. */
  weightsChecksum: string;
  /**
   * The optimizer's name, base learning rate and state (step count, momentum
   * or moments); the state is absent in checkpoints written before
   * optimizers had one (plain SGD, which needs none).
   */
  optimizer: { name: OptimizerName; lr: number; state?: OptimizerState };
  /**
   * The sampler's and the dropout masks' state: both are functions of the
   * seed and the position (epoch, step, rank), so the seed is all there is.
   */
  rng: { seed: number };
  /** Metrics of the epochs completed. */
  history: EpochRecord[];
  /** Sums of the epoch in progress (zero when `stepsDone` is 0). */
  partial: EpochSums;
  /** Training examples and seconds of the completed epochs, for the overall throughput. */
  totals: { examples: number; trainSeconds: number };
}

/**
 * Encodes `state` as checkpoint file bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeCheckpoint, encodeCheckpoint } from "./checkpoint.ts";
 * import { sha256Hex } from "../../util/sha256.ts";
 *
 * const weights = new Float32Array([0.5, -1]);
 * const state = {
 *   config: {
 *     workers: 2, epochs: 1, batchSize: 8, lr: 0.1, seed: 0, backend: "cpu" as const,
 *     allReduce: "shared" as const, trainLimit: undefined, testLimit: undefined,
 *     model: { name: "nin", options: { inputSize: 67, width: 0.125, dropout: 0, seed: 0 } },
 *   },
 *   epochsDone: 0, stepsDone: 3, weights, weightsChecksum: await sha256Hex(weights),
 *   optimizer: { name: "sgd" as const, lr: 0.1 }, rng: { seed: 0 }, history: [],
 *   partial: { lossSum: 6.9, correct: 3, count: 24, trainSeconds: 1.5, seconds: 1.5 },
 *   totals: { examples: 0, trainSeconds: 0 },
 * };
 * const bytes = await encodeCheckpoint(state);
 * const back = await decodeCheckpoint(bytes, { name: "in memory" });
 * assert.deepEqual(back.weights, state.weights);
 * assert.equal(back.stepsDone, 3);
 * ```
 */
export async function encodeCheckpoint(state: TrainingState): Promise<Uint8Array> {
  const slots = state.optimizer.state?.slots ?? {};
  const payload = encode({
    ...state,
    weights: bytesOf(state.weights),
    optimizer: state.optimizer.state === undefined ? state.optimizer : {
      ...state.optimizer,
      state: {
        step: state.optimizer.state.step,
        slots: Object.fromEntries(Object.entries(slots).map(([k, v]) => [k, bytesOf(v)])),
      },
    },
  }, { ignoreUndefined: true });
  return encode({
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    sha256: await sha256Hex(payload),
    payload,
  });
}

/**
 * Decodes checkpoint file bytes, verifying format, version and checksum.
 * Throws a {@linkcode DataError} starting with `options.name` otherwise.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeCheckpoint } from "./checkpoint.ts";
 *
 * await assert.rejects(
 *   decodeCheckpoint(new Uint8Array([1, 2, 3]), { name: "x.msgpack" }),
 *   /^DataError: x\.msgpack: not a checkpoint/,
 * );
 * ```
 */
export async function decodeCheckpoint(
  bytes: Uint8Array,
  options: { name: string },
): Promise<TrainingState> {
  const fail = (reason: string) => new DataError(`${options.name}: ${reason}`);
  let outer: Record<string, unknown>;
  try {
    outer = decode(bytes, withinLimits(bytes)) as Record<string, unknown>;
  } catch (error) {
    throw fail(`not a checkpoint, or truncated (${(error as Error).message})`);
  }
  if (typeof outer !== "object" || outer === null || outer.format !== CHECKPOINT_FORMAT) {
    throw fail("not a checkpoint, or truncated (no checkpoint header)");
  }
  if (outer.version !== CHECKPOINT_VERSION) {
    throw fail(
      `checkpoint format version ${outer.version}, but this library reads version ${CHECKPOINT_VERSION}`,
    );
  }
  const payload = outer.payload;
  if (!(payload instanceof Uint8Array)) throw fail("checkpoint without payload");
  const actual = await sha256Hex(payload);
  if (actual !== outer.sha256) {
    throw fail(
      `checksum mismatch (stored ${outer.sha256}, computed ${actual}): the file is corrupt`,
    );
  }
  let state: Omit<TrainingState, "weights"> & { weights: unknown };
  try {
    state = decode(payload, withinLimits(payload)) as Omit<TrainingState, "weights"> & {
      weights: unknown;
    };
  } catch (error) {
    throw fail(`corrupt payload (${(error as Error).message})`);
  }
  const raw = state.weights;
  if (!(raw instanceof Uint8Array) || raw.byteLength % 4 !== 0) {
    throw fail("corrupt payload (weights are not float32 bytes)");
  }
  const weights = new Float32Array(raw.slice().buffer);
  const weightsChecksum = await sha256Hex(weights);
  if (weightsChecksum !== state.weightsChecksum) {
    throw fail("the weights do not match their checksum");
  }
  const optimizer = decodeOptimizer(state.optimizer);
  const config = upgradeConfig(state.config);
  const problem = checkpointProblem({ ...state, config, weights, optimizer });
  if (problem !== undefined) throw fail(`invalid checkpoint: ${problem}`);
  return {
    ...state,
    optimizer: optimizer as TrainingState["optimizer"],
    config: {
      ...config as RunConfig,
      trainLimit: state.config.trainLimit,
      testLimit: state.config.testLimit,
    },
    weights,
  };
}

/**
 * A checkpoint's settings in today's form: files written before the trainer
 * took other models hold NiN's options as `model`.
 */
function upgradeConfig(config: unknown): unknown {
  const model = (config as { model?: Record<string, unknown> } | undefined)?.model;
  if (typeof model !== "object" || model === null || "name" in model) return config;
  return { ...config as object, model: { name: "nin", options: model } };
}

/** The bytes of a float32 array, without a copy. */
function bytesOf(values: Float32Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

/** The decoded optimizer field with its slots' bytes as float32 arrays (left as is if malformed). */
function decodeOptimizer(optimizer: unknown): unknown {
  const state = (optimizer as { state?: { slots?: unknown } } | undefined)?.state;
  const slots = state?.slots;
  if (typeof slots !== "object" || slots === null) return optimizer;
  const decoded: Record<string, unknown> = {};
  for (const [name, raw] of Object.entries(slots)) {
    decoded[name] = raw instanceof Uint8Array && raw.byteLength % 4 === 0
      ? new Float32Array(raw.slice().buffer)
      : raw;
  }
  return { ...optimizer as object, state: { ...state, slots: decoded } };
}

/** A checkpoint file in a directory. */
export interface CheckpointFile {
  /** Full path. */
  path: string;
  /** Epochs done, from the name. */
  epochsDone: number;
  /** Steps done in the next epoch, from the name. */
  stepsDone: number;
  /** Whether it is a regular file (always, unless listed with `allEntries`). */
  isFile: boolean;
}

const NAME = /^ckpt-(\d{4,})-(\d{6,})\.msgpack$/;

/**
 * The position a checkpoint file name stands for, or undefined when the name
 * is not a checkpoint's (see {@linkcode checkpointName}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseCheckpointName } from "./checkpoint.ts";
 *
 * assert.deepEqual(parseCheckpointName("ckpt-0002-000120.msgpack"), { epochsDone: 2, stepsDone: 120 });
 * assert.equal(parseCheckpointName("notes.txt"), undefined);
 * ```
 */
export function parseCheckpointName(
  name: string,
): { epochsDone: number; stepsDone: number } | undefined {
  const match = name.match(NAME);
  return match ? { epochsDone: Number(match[1]), stepsDone: Number(match[2]) } : undefined;
}

/**
 * The file name for a checkpoint after `epochsDone` epochs and `stepsDone`
 * further steps.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkpointName } from "./checkpoint.ts";
 *
 * assert.equal(checkpointName({ epochsDone: 2, stepsDone: 120 }), "ckpt-0002-000120.msgpack");
 * ```
 */
export function checkpointName(position: { epochsDone: number; stepsDone: number }): string {
  const epochs = String(position.epochsDone).padStart(4, "0");
  const steps = String(position.stepsDone).padStart(6, "0");
  return `ckpt-${epochs}-${steps}.msgpack`;
}

/**
 * The checkpoint files in `dir`, oldest first (none if `dir` does not exist);
 * with `allEntries`, also whatever else is named like one (a directory, a
 * link).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { listCheckpoints } from "./checkpoint.ts";
 *
 * assert.deepEqual(await listCheckpoints("/nonexistent"), []);
 * ```
 */
export async function listCheckpoints(
  dir: string,
  options: { allEntries?: boolean } = {},
): Promise<CheckpointFile[]> {
  const files: CheckpointFile[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      const position = parseCheckpointName(entry.name);
      if (position && (entry.isFile || options.allEntries)) {
        files.push({ path: join(dir, entry.name), ...position, isFile: entry.isFile });
      }
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  return files.sort((a, b) => a.epochsDone - b.epochsDone || a.stepsDone - b.stepsDone);
}

/**
 * Writes `state` into `dir` (created if missing) atomically — a temporary
 * file, `fsync`, rename — then reads it back and verifies it. Resolves with the
 * file's path. Deletes nothing: `train()` prunes through a `CheckpointStore`,
 * which deletes only its own run's verified checkpoints.
 *
 * @example
 * ```ts ignore
 * import { writeCheckpoint } from "./checkpoint.ts";
 *
 * const path = await writeCheckpoint("./checkpoints", state);
 * ```
 */
export async function writeCheckpoint(dir: string, state: TrainingState): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const path = join(dir, checkpointName(state));
  const bytes = await encodeCheckpoint(state);
  await writeFileAtomic(path, bytes).catch((error) => {
    // E.g. a full disk: say which file, where, and how much it needed (nothing half is left).
    throw new DataError(
      `cannot write checkpoint ${basename(path)} (${bytes.length} bytes) in ${dir}: ${
        (error as Error).message
      }`,
    );
  });
  let written: TrainingState;
  try {
    written = await readCheckpoint(path);
  } catch (error) {
    throw new DataError(
      `checkpoint ${path} did not verify after writing: ${(error as Error).message}`,
    );
  }
  if (written.weightsChecksum !== state.weightsChecksum) {
    throw new DataError(`checkpoint ${path} did not verify after writing: other weights`);
  }
  return path;
}

/**
 * Reads and verifies one checkpoint file; throws a {@linkcode DataError}
 * naming it and the reason if it cannot be used. A file named like a
 * checkpoint (`ckpt-EEEE-SSSSSS.msgpack`) must hold the position its name
 * says, since the newest is chosen by name.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readCheckpoint } from "./checkpoint.ts";
 *
 * await assert.rejects(readCheckpoint("/nonexistent/ckpt.msgpack"), /cannot read/);
 * ```
 */
export async function readCheckpoint(path: string): Promise<TrainingState> {
  let bytes: Uint8Array;
  try {
    // Only regular files: a device (/dev/zero) or a FIFO has no end to read to.
    const info = await Deno.stat(path);
    if (!info.isFile) throw new DataError(`checkpoint ${path} is not a regular file`);
    if (info.size > MAX_CHECKPOINT_BYTES) {
      throw new DataError(
        `checkpoint ${path} has ${info.size} bytes, over the ${MAX_CHECKPOINT_BYTES}-byte limit`,
      );
    }
    bytes = await Deno.readFile(path);
  } catch (error) {
    if (error instanceof DataError) throw error;
    throw new DataError(`cannot read checkpoint ${path}: ${(error as Error).message}`);
  }
  const state = await decodeCheckpoint(bytes, { name: path });
  // A file named like a checkpoint is chosen by its name: the name must tell the truth.
  const named = parseCheckpointName(basename(path));
  if (named && (named.epochsDone !== state.epochsDone || named.stepsDone !== state.stepsDone)) {
    throw new DataError(
      `${path}: its name says ${named.epochsDone} epoch(s) and ${named.stepsDone} step(s) done, ` +
        `its content ${state.epochsDone} and ${state.stepsDone}: not a checkpoint this run wrote`,
    );
  }
  return state;
}

/** The largest checkpoint file read: 2 GiB (a full NiN checkpoint is 8 MB). */
const MAX_CHECKPOINT_BYTES = 2 ** 31;

/**
 * MessagePack decoding limits for `bytes`: no string, byte array, array, map
 * or extension may declare more elements than `bytes` can hold, so a size
 * field never makes the decoder allocate more than the input.
 */
function withinLimits(bytes: Uint8Array) {
  const most = bytes.length;
  return {
    maxStrLength: most,
    maxBinLength: most,
    maxArrayLength: most,
    maxMapLength: most,
    maxExtLength: most,
  };
}

/**
 * The newest checkpoint in `dir` that reads and verifies, and the newer ones
 * skipped as unusable (with the reason). Resolves with `state` undefined when
 * there is none.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { latestCheckpoint } from "./checkpoint.ts";
 *
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/ckpt-0001-000000.msgpack`, "garbage");
 * const latest = await latestCheckpoint(dir);
 * assert.equal(latest.state, undefined);
 * assert.match(latest.skipped[0].reason, /not a checkpoint/);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function latestCheckpoint(dir: string): Promise<{
  path?: string;
  state?: TrainingState;
  skipped: { path: string; reason: string }[];
}> {
  const skipped: { path: string; reason: string }[] = [];
  for (const file of (await listCheckpoints(dir)).reverse()) {
    try {
      return { path: file.path, state: await readCheckpoint(file.path), skipped };
    } catch (error) {
      if (!(error instanceof DataError)) throw error;
      skipped.push({ path: file.path, reason: error.message });
    }
  }
  return { skipped };
}
