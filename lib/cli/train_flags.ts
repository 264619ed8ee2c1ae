/**
 * The training flags shared by the command-line scripts: their `parseArgs`
 * specification, their help text, the presets, and their conversion into
 * {@linkcode TrainOptions}.
 *
 * @module
 */

import type { WireFormat } from "../train/shared/options.ts";
import type { AllReduceAlgorithm } from "../collective/registry.ts";
import type { DatasetName } from "../data/registry.ts";
import { KERNEL_SETS, type KernelSet } from "../kernels/mod.ts";
import { describeValue, UsageError } from "../errors.ts";
import type { HeadInit, KernelInit } from "../model/nin.ts";
import { type ModelName, MODELS, type ModelSpec } from "../model/registry.ts";
import { type LrSchedule, type OptimizerName, parseSchedule } from "../optim/mod.ts";
import { type BackendName, BACKENDS } from "../train/shared/backend.ts";
import { type PresetName, PRESETS, type TrainOptions } from "../train/shared/options.ts";

const QUICK = PRESETS.quick;
import { numberFlag } from "./cli.ts";

/**
 * `parseArgs` options of the training flags (all strings or booleans, validated later).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseArgs } from "node:util";
 * import { TRAIN_FLAGS } from "./train_flags.ts";
 *
 * const { values } = parseArgs({ args: ["--workers", "2"], options: TRAIN_FLAGS });
 * assert.equal(values.workers, "2");
 * ```
 */
export const TRAIN_FLAGS = {
  model: { type: "string" },
  workers: { type: "string" },
  epochs: { type: "string" },
  "batch-size": { type: "string" },
  shards: { type: "string" },
  lr: { type: "string" },
  optimizer: { type: "string" },
  momentum: { type: "string" },
  nesterov: { type: "boolean" },
  "weight-decay": { type: "string" },
  schedule: { type: "string" },
  seed: { type: "string" },
  backend: { type: "string" },
  allreduce: { type: "string" },
  "no-shard-optimizer": { type: "boolean" },
  wire: { type: "string" },
  kernels: { type: "string" },
  overwrite: { type: "boolean" },
  "input-size": { type: "string" },
  width: { type: "string" },
  dropout: { type: "string" },
  init: { type: "string" },
  head: { type: "string" },
  "train-limit": { type: "string" },
  "test-limit": { type: "string" },
  preset: { type: "string" },
  "step-timeout": { type: "string" },
  "startup-timeout": { type: "string" },
  "checkpoint-dir": { type: "string" },
  "checkpoint-every": { type: "string" },
  keep: { type: "string" },
  resume: { type: "string" },
  "max-restarts": { type: "string" },
  "data-dir": { type: "string" },
  dataset: { type: "string" },
  "no-download": { type: "boolean" },
  trace: { type: "string" },
  "trace-steps": { type: "string" },
  serve: { type: "string" },
  elastic: { type: "boolean" },
  "min-members": { type: "string" },
  verify: { type: "string" },
} as const;

/**
 * Help text of {@linkcode TRAIN_FLAGS}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TRAIN_FLAGS_HELP } from "./train_flags.ts";
 *
 * assert.ok(TRAIN_FLAGS_HELP.includes("--workers N"));
 * ```
 */
export const TRAIN_FLAGS_HELP =
  `  --model NAME       nin (default: d2l §7.3), lenet (d2l §7.6: 28×28, sigmoid; trained
                     at lr 0.9, batch 256 unless given), resnet18 (d2l §8.6: 96 px, batch
                     normalisation; lr 0.05, batch 256 unless given), or your own:
                     FILE[#EXPORT], a module exporting a function (default createModel)
  --workers N        worker replicas (default 1)
  --epochs N         passes over the training set (default 10)
  --batch-size N     global batch, split across the workers (default 128)
  --shards N         cut each batch into N shards, a multiple of the workers (default: one
                     per worker); each worker computes whole shards in turn. The same N
                     gives the same weights, bit for bit, with any worker count dividing it
  --lr X             base learning rate (default 0.1)
  --optimizer NAME   sgd (default) or adam
  --momentum X       SGD momentum (default 0)
  --nesterov         Nesterov momentum (with --momentum)
  --weight-decay X   L2 penalty added to the gradient (default 0)
  --schedule S       learning rate per step: constant (default), step:every=E[,gamma=G]
                     (×G, default 0.1, every E epochs) or cosine[:min=X]; each may add
                     warmup=E (linear warm-up over E epochs), e.g. cosine:warmup=1
  --seed N           seed of initialisation, shuffling and dropout (default 0)
  --backend NAME     webgpu (default) or cpu
  --allreduce NAME   shared (default: zero-copy, shared memory) or star (via the coordinator);
                     with --nnodes, tcp (the only choice, and the default); mpi: the
                     processes mpirun or srun started, through Open MPI (same bits as tcp)
  --no-shard-optimizer  every worker runs the whole optimizer (default with the shared
                     all-reduce: each updates its own chunk, ZeRO stage 1; same bits)
  --wire NAME        float32 (default) or bf16: gradients rounded to bfloat16, half the bytes
                     between processes (the sum stays float64, in rank order)
  --kernels NAME     fast (default: this library's WebGPU convolution kernels) or tfjs
                     (tfjs's own, to compare)
  --input-size N     side images are resized to (NiN: default 224, at least 67; ResNet-18:
                     default 96, at least 28)
  --width X          channel multiplier of NiN's first three blocks or ResNet-18's stages
                     (default 1)
  --dropout X        dropout rate (default 0.5)
  --init NAME        kernel initialisation: he-normal (default) or glorot-uniform
  --head NAME        NiN's class-score layer: random (default) or zero (zero weights, equal
                     positive scores: no class starts without gradient)
  --train-limit N    use only the first N training examples
  --test-limit N     use only the first N test examples
  --preset NAME      d2l (default) or quick: ${QUICK.model.inputSize} px, width ${QUICK.model.width},
                     dropout ${QUICK.model.dropout}, head ${QUICK.model.head}, ${QUICK.epochs} epochs, batch ${QUICK.batchSize}
                     (about 6 min on 2 CPU cores); or resnet18-quick: ResNet-18 at 28 px,
                     width 0.125, 2 epochs (about 5 min on 2 CPU cores); flags given
                     override it
  --step-timeout S   stop with an error naming the stuck worker after S seconds without
                     progress (default: the start-up timeout until the first step
                     ends, then 20 × the slowest step, at least 5 min)
  --startup-timeout S  seconds for the workers to build the model and to finish their
                     first step; past it, the error says what did not finish (default 1800)
  --checkpoint-dir D save a checkpoint in D after every epoch (and on Ctrl-C)
  --checkpoint-every N  also save one every N steps within an epoch
  --keep K           keep this run's newest K checkpoints (default 3); other files
                     in D are never deleted
  --resume [FILE]    continue from FILE, or from the newest usable checkpoint in
                     --checkpoint-dir (a fresh start when it holds none)
  --overwrite        start a new run in a --checkpoint-dir holding another run's
                     checkpoints (refused otherwise); they are deleted once this
                     run's first checkpoint is written
  --max-restarts N   restart every worker from the last checkpoint after a worker fails
                     or stalls, at most N times (default 0)
  --dataset NAME     fashion-mnist (default) or cifar10 (the binary version, 32×32 RGB)
  --data-dir DIR     directory with the data set's files (or FASHION_MNIST_DIR, CIFAR10_DIR):
                     Fashion-MNIST's four files; CIFAR-10's archive or its batch files
  --no-download      fail instead of downloading missing files
  --trace FILE       write a Chrome trace (Perfetto, chrome://tracing) of a few steps: each
                     worker's host phases and GPU kernels, timed with WebGPU timestamps
  --trace-steps N    steps to trace, after the first (default 5)
  --serve HOST:PORT  serve a live dashboard of the run at http://HOST:PORT/ (loss and
                     accuracy curves, speed, members), shown to pages that prove the job's
                     token (a fresh one, in the printed address, when the run has none)
  --elastic          with --serve: other processes join the run (--join) and leave while it
                     trains; each batch's --shards go to whoever is free, and the weights
                     equal a fixed run's with the same shards
  --min-members N    with --elastic: members needed to compute, this process's workers
                     included (default 1); below it the run waits for more
  --verify FRACTION  with --elastic: recompute this share (0 to 1) of the results other
                     processes and tabs send, here, and drop a member whose result differs`;

/**
 * The model a `flag` names: a built-in's name, or a module `FILE[#EXPORT]`
 * (a path or URL; the export defaults to `createModel`). Throws a
 * {@linkcode UsageError} naming the flag for anything else.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { modelFlag } from "./train_flags.ts";
 *
 * assert.equal(modelFlag("--model", "lenet"), "lenet");
 * assert.deepEqual(modelFlag("--model", "./mlp.ts#build"), { module: "./mlp.ts", export: "build" });
 * assert.throws(() => modelFlag("--model", "resnet"), /--model must be one of nin, lenet, resnet18 or FILE/);
 * ```
 */
export function modelFlag(flag: string, value: string): ModelName | ModelSpec {
  if (Object.hasOwn(MODELS, value)) return value as ModelName;
  const hash = value.lastIndexOf("#");
  const module = hash < 0 ? value : value.slice(0, hash);
  const exportName = hash < 0 ? undefined : value.slice(hash + 1);
  if (!/[\\/]|\.[cm]?[jt]sx?$/.test(module) || exportName === "") {
    throw new UsageError(
      `${flag} must be one of ${
        Object.keys(MODELS).join(", ")
      } or FILE[#EXPORT] (a module that builds your model, e.g. ./my_model.ts), got "${value}"`,
    );
  }
  return exportName === undefined ? { module } : { module, export: exportName };
}

/** Parsed values of {@linkcode TRAIN_FLAGS}. */
export type TrainFlagValues = {
  [K in keyof typeof TRAIN_FLAGS]?: (typeof TRAIN_FLAGS)[K]["type"] extends "boolean" ? boolean
    : string;
};

/**
 * Turns parsed training flags into {@linkcode TrainOptions}: the preset's
 * name and every flag given (the preset's values are applied, beneath them,
 * by `resolveTrainOptions`). Malformed numbers and unknown names throw a
 * {@linkcode UsageError} naming the flag; ranges are checked by
 * `resolveTrainOptions`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { trainOptionsFromFlags } from "./train_flags.ts";
 * import { resolveTrainOptions } from "../train/shared/resolve.ts";
 *
 * const options = trainOptionsFromFlags({ preset: "quick", workers: "2" });
 * assert.ok(options.distributed?.workers === 2 && options.preset === "quick");
 * assert.equal(resolveTrainOptions(options).model.options.inputSize, 99);
 * ```
 */
export function trainOptionsFromFlags(values: TrainFlagValues): TrainOptions {
  const preset = values.preset ?? "d2l";
  if (!(preset in PRESETS)) {
    throw new UsageError(
      `--preset must be one of ${Object.keys(PRESETS).join(", ")}, got "${preset}"`,
    );
  }
  const backend = values.backend ?? "webgpu";
  if (!BACKENDS.includes(backend as BackendName)) {
    throw new UsageError(`--backend must be one of ${BACKENDS.join(", ")}, got "${backend}"`);
  }
  if (values.kernels !== undefined && !KERNEL_SETS.includes(values.kernels as KernelSet)) {
    throw new UsageError(
      `--kernels must be one of ${KERNEL_SETS.join(", ")}, got "${values.kernels}"`,
    );
  }
  let schedule: LrSchedule | undefined;
  if (values.schedule !== undefined) {
    try {
      schedule = parseSchedule(values.schedule);
    } catch (error) {
      throw new UsageError(`--schedule "${values.schedule}": ${(error as Error).message}`);
    }
  }
  const hyper = {
    momentum: numberFlag("--momentum", values.momentum),
    nesterov: values.nesterov || undefined,
    weightDecay: numberFlag("--weight-decay", values["weight-decay"]),
  };
  const tuned = Object.values(hyper).some((value) => value !== undefined);
  const optimizer = values.optimizer === undefined && !tuned
    ? undefined
    : { name: (values.optimizer ?? "sgd") as OptimizerName, ...hyper };
  const int = (flag: string, value: string | undefined) =>
    numberFlag(flag, value, { integer: true });
  const nin = defined({
    inputSize: int("--input-size", values["input-size"]),
    width: numberFlag("--width", values.width),
    dropout: numberFlag("--dropout", values.dropout),
    init: values.init as KernelInit | undefined,
    head: values.head as HeadInit | undefined,
  });
  const model = values.model === undefined ? undefined : modelFlag("--model", values.model);
  const shapeFlags = Object.keys(nin).map((key) =>
    key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
  );
  // --input-size and --width shape NiN and ResNet-18; the rest NiN only.
  const target = model ?? "nin";
  const misplaced = target === "nin"
    ? []
    : target === "resnet18"
    ? shapeFlags.filter((flag) => flag !== "input-size" && flag !== "width")
    : shapeFlags;
  if (misplaced.length > 0) {
    throw new UsageError(
      `${misplaced.map((flag) => `--${flag}`).join(", ")} ${
        misplaced.length === 1 ? "applies" : "apply"
      } to NiN only, not to model ${
        describeValue(typeof target === "string" ? target : "(custom)")
      }`,
    );
  }
  if (values["trace-steps"] !== undefined && values.trace === undefined) {
    throw new UsageError("--trace-steps needs --trace FILE");
  }
  if (values.elastic && values.serve === undefined) {
    throw new UsageError("--elastic needs --serve HOST:PORT: members join the run there");
  }
  if (values["min-members"] !== undefined && !values.elastic) {
    throw new UsageError("--min-members needs --elastic");
  }
  const minMembers = int("--min-members", values["min-members"]);
  if (minMembers !== undefined && minMembers < 1) {
    throw new UsageError(`--min-members must be at least 1, got ${values["min-members"]}`);
  }
  if (values.verify !== undefined && !values.elastic) {
    throw new UsageError("--verify needs --elastic");
  }
  const verify = values.verify === undefined ? undefined : Number(values.verify);
  if (verify !== undefined && !(values.verify!.trim() !== "" && verify >= 0 && verify <= 1)) {
    throw new UsageError(`--verify must be a fraction from 0 to 1, got "${values.verify}"`);
  }
  const elastic = defined({ minMembers, verify });
  return defined({
    serve: values.serve === undefined ? undefined : {
      ...serveFlag(values.serve),
      ...(values.elastic ? { elastic: Object.keys(elastic).length === 0 ? true : elastic } : {}),
    },
    trace: values.trace === undefined ? undefined : defined({
      file: values.trace,
      steps: int("--trace-steps", values["trace-steps"]),
    }),
    preset: preset as PresetName,
    model: shapeFlags.length > 0 ? { name: target as "nin" | "resnet18", ...nin } : model,
    data: defined({
      dataset: values.dataset as DatasetName | undefined,
      dir: values["data-dir"],
      download: !values["no-download"],
      trainLimit: int("--train-limit", values["train-limit"]),
      testLimit: int("--test-limit", values["test-limit"]),
    }),
    epochs: int("--epochs", values.epochs),
    batchSize: int("--batch-size", values["batch-size"]),
    lr: numberFlag("--lr", values.lr),
    optimizer,
    schedule,
    seed: int("--seed", values.seed),
    backend: values.backend as BackendName | undefined,
    kernels: values.kernels as KernelSet | undefined,
    distributed: defined({
      workers: int("--workers", values.workers),
      shards: int("--shards", values.shards),
      allReduce: values.allreduce as AllReduceAlgorithm | undefined,
      shardOptimizer: values["no-shard-optimizer"] ? false : undefined,
      wire: values.wire as WireFormat | undefined,
      stepTimeout: numberFlag("--step-timeout", values["step-timeout"]),
      startupTimeout: numberFlag("--startup-timeout", values["startup-timeout"]),
      maxRestarts: int("--max-restarts", values["max-restarts"]),
    }),
    checkpoint: defined({
      dir: values["checkpoint-dir"],
      every: int("--checkpoint-every", values["checkpoint-every"]),
      keep: int("--keep", values.keep),
      overwrite: values.overwrite,
      resume: values.resume === undefined ? undefined : values.resume === "" ? true : values.resume,
    }),
  });
}

/** `fields` without its undefined values (and undefined when none is left, for a group). */
function defined<T extends object>(fields: T): T {
  return Object.fromEntries(
    Object.entries(fields).filter(([, value]) => value !== undefined),
  ) as T;
}

/**
 * `--serve HOST:PORT` as `train()`'s `serve` option; a usage error names
 * the value otherwise.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { serveFlag } from "./train_flags.ts";
 *
 * assert.deepEqual(serveFlag("127.0.0.1:8080"), { hostname: "127.0.0.1", port: 8080 });
 * assert.deepEqual(serveFlag("[::1]:0"), { hostname: "::1", port: 0 });
 * assert.throws(() => serveFlag("8080"), /--serve must be HOST:PORT, got "8080"/);
 * ```
 */
export function serveFlag(value: string): { hostname: string; port: number } {
  const match = value.match(/^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/);
  const port = Number(match?.[3]);
  if (!match || port > 65535) {
    throw new UsageError(`--serve must be HOST:PORT, got ${JSON.stringify(value)}`);
  }
  return { hostname: match[1] ?? match[2], port };
}
