/**
 * The coordinator: loads and shares the data set, starts a group of replica
 * workers, runs the epochs, writes checkpoints, resumes from them, restarts
 * the group after a failure, and stops cleanly when asked to.
 *
 * @module
 */

import { stepsPerEpoch } from "../../data/batches.ts";
import { checkSplits, shareDataset } from "../../data/dataset.ts";
import { DATASETS } from "../../data/registry.ts";
import { DivergedError, InterruptedError, UsageError, WorkerError } from "../../errors.ts";
import type { OptimizerState } from "../../optim/mod.ts";
import {
  flatWeightsOf,
  isLayersModel,
  type ModelEntry,
  type ModelName,
  MODELS,
  modelSizes,
} from "../../model/registry.ts";
import type { DeviceInfo } from "../shared/backend.ts";
import type { EpochSums, RunConfig, TrainingState } from "../shared/checkpoint.ts";
import { CheckpointStore } from "./checkpoint_store.ts";
import type {
  EpochRecord,
  ResolvedProcessGroup,
  ResolvedTrainOptions,
  TrainOptions,
} from "../shared/options.ts";
import { resolveTrace, resolveTrainOptions } from "../shared/resolve.ts";
import type { TraceMessage } from "../shared/protocol.ts";
import { chromeTrace } from "../../util/trace_events.ts";
import { probeWritable, writeFileAtomic } from "../../util/atomic_write.ts";
import { dirname, resolve as resolvePath } from "node:path";
import {
  checkResumable,
  findResumePoint,
  paddedSize,
  resumedOptions,
  type ResumePoint,
} from "./resume.ts";
import { chooseWebGPUPath } from "./webgpu_path.ts";
import { listenForStop } from "./signals.ts";
import { availableMemory, checkMemory, estimateMemory } from "./memory.ts";
import { isSoftwareAdapter } from "../shared/backend.ts";
import { createOptimizer, type OptimizerConfig } from "../../optim/mod.ts";
import { runConfig } from "../shared/checkpoint_schema.ts";
import { checkPermissions } from "./permissions.ts";
import { joinProcesses, sharePosition } from "./processes.ts";
import { type ServedRun, serveRun } from "./serve.ts";
import { ElasticGroup } from "./elastic_group.ts";
import { WebSocketChannel } from "../../collective/ws_channel.ts";
import { processJob, soloJob } from "./job.ts";
import { PeerError } from "../../collective/process_group.ts";
import { InterruptedRendezvous } from "../../collective/tcp/tcp_process_group.ts";
import { type GroupPlan, type StepSnapshot, WorkerGroup } from "./worker_group.ts";

/** What {@linkcode train} resolves to. */
export interface TrainResult {
  /** One record per epoch (including epochs done before a resume). */
  history: EpochRecord[];
  /** Final weights, flattened in `model.getWeights()` order. */
  weights: Float32Array;
  /** SHA-256 of `weights`, equal on every replica. */
  checksum: string;
  /** The device the workers ran on (undefined if no worker had to run). */
  device: DeviceInfo | undefined;
  /** Training examples per second over all epochs (evaluation excluded). */
  examplesPerSec: number;
  /** Number of times the workers were restarted after a failure. */
  restarts: number;
}

const NO_SUMS: EpochSums = { lossSum: 0, correct: 0, count: 0, trainSeconds: 0, seconds: 0 };

/**
 * Trains a model (by default d2l's NiN on Fashion-MNIST) data-parallel across
 * `distributed.workers` worker threads, and resolves with the per-epoch
 * metrics and the final weights.
 *
 * Each worker holds a replica and computes the gradient of its share of every
 * global batch; the gradients are averaged (weighted by examples, in a fixed
 * order) and every replica applies the same update. Replicas are compared by
 * weight checksum after every epoch. With `checkpoint.dir` the state is saved
 * after every epoch (and every `checkpoint.every` steps) and
 * `checkpoint.resume` continues from it; `distributed.maxRestarts` restarts
 * the workers after a failure; aborting `signal` (or, with `stopOnSignals`,
 * Ctrl-C or SIGTERM) stops at a step boundary. Throws a `UsageError` for bad
 * options, a `DataError` for missing or corrupt data or checkpoints, a
 * `WorkerError` naming the worker that failed (all workers are stopped), a
 * `DivergedError`, a `ReplicaDivergenceError`, or an `InterruptedError`.
 *
 * @example A small run on two workers
 * ```ts ignore
 * import { train } from "../../../mod.ts";
 *
 * const { history } = await train({
 *   model: { name: "nin", inputSize: 67, width: 0.25 },
 *   data: { trainLimit: 2048, testLimit: 512 },
 *   distributed: { workers: 2 },
 *   epochs: 2,
 *   onEpoch: (r) => console.log(`epoch ${r.epoch}: test acc ${r.testAcc.toFixed(3)}`),
 * });
 * ```
 */
export async function train(options: TrainOptions = {}): Promise<TrainResult> {
  const given = resolveTrainOptions(options); // usage errors before anything else
  const trace = resolveTrace(options.trace);
  checkPermissions({ backend: given.backend, workerUrl: workerUrlOf(options) });
  // In a job of several processes only rank 0 reads and writes checkpoints; the others follow it.
  const leader = (given.distributed.processGroup?.rank ?? 0) === 0;
  const signals = options.stopOnSignals
    ? listenForStop({
      saving: !given.checkpoint.dir ? "none" : leader ? "here" : "rank 0",
      onSignal: typeof options.stopOnSignals === "object"
        ? options.stopOnSignals.onSignal
        : undefined,
    })
    : undefined;
  const signal = options.signal && signals
    ? AbortSignal.any([options.signal, signals.signal])
    : options.signal ?? signals?.signal;
  checkElastic(options, given);
  // In a job of several processes, rank 0 serves the dashboard (every process is given the flag).
  const served = options.serve && leader ? await serveRun(options, given) : undefined;
  let ended = "the run stopped";
  try {
    const result = await run({ ...(served?.hooked ?? options), signal }, given, {
      leader,
      trace,
      members: served?.members,
    });
    ended = "the run finished";
    return result;
  } catch (error) {
    ended = `the run stopped: ${error instanceof Error ? error.message : String(error)}`;
    throw error;
  } finally {
    await served?.end(ended);
    signals?.dispose();
  }
}

/** {@linkcode train} once its options are checked and its stop signal is set up. */
async function run(
  options: TrainOptions & { signal: AbortSignal | undefined },
  given: ResolvedTrainOptions,
  where: {
    leader: boolean;
    trace: { file: string; steps: number } | undefined;
    /** An elastic run: members join through the dashboard's server. */
    members?: ServedRun["members"];
  },
): Promise<TrainResult> {
  const { leader } = where;
  const started = performance.now();
  const rank = given.distributed.processGroup?.rank ?? 0;
  const trace = where.trace && { ...where.trace, file: traceFileOf(where.trace.file, rank) };
  if (trace) {
    await probeWritable(dirname(resolvePath(trace.file))).catch((error) => {
      throw new UsageError(`cannot write the trace to ${trace.file}: ${error.message}`);
    });
  }
  let traceWritten: Promise<void> = Promise.resolve();
  const found = given.checkpoint.resume !== undefined && leader
    ? await findResumePoint(given.checkpoint.resume, { dir: given.checkpoint.dir })
    : undefined;
  // Every join (the first, and after each restart) uses the options as every process started,
  // and the port rank 0 listened on first (its pick, when it was given port 0).
  let masterPort: number | undefined;
  const join = (group: ResolvedProcessGroup) =>
    joinProcesses(
      group.backend === "mpi" ? group : {
        ...group,
        masterPort: masterPort ?? group.masterPort,
        onListening: (port) => {
          if (masterPort === undefined) group.onListening?.(port);
          masterPort = port;
        },
      },
      { options: given, signal: options.signal },
    ).catch((error) => {
      if (error instanceof InterruptedRendezvous) throw interrupted(options.signal);
      throw error;
    });
  let processes = given.distributed.processGroup && await join(given.distributed.processGroup);
  const here = {
    runId: found?.state.runId ?? crypto.randomUUID(),
    state: found?.state,
    path: found?.path,
  };
  const position = processes ? await sharePosition(processes, here) : here;
  const resume: ResumePoint | undefined = position.state && {
    path: leader
      ? position.path!
      : `rank 0's ${position.path ?? "state after its last restart (in memory)"}`,
    state: position.state,
    skipped: found?.skipped ?? [],
  };
  // The run's settings, resolved: a resumed run's are its checkpoint's.
  const resolved = resume ? resolveTrainOptions(resumedOptions(resume, options)) : given;
  const { distributed } = resolved;
  const runId = position.runId;
  // Before any work: the checkpoint directory is created, written to, and checked for other runs.
  await using store = resolved.checkpoint.dir === undefined || !leader
    ? undefined
    : await CheckpointStore.open(resolved.checkpoint.dir, {
      runId,
      keep: resolved.checkpoint.keep,
      resuming: resume !== undefined,
      overwrite: resolved.checkpoint.overwrite,
    });
  const inMemory = options.data?.train && options.data.test
    ? { train: options.data.train, test: options.data.test }
    : undefined;
  const data = inMemory ?? await DATASETS[resolved.data.dataset].load({
    dataDir: resolved.data.dir,
    download: resolved.data.download,
    signal: options.signal,
  }).catch((error) => {
    if (!options.signal?.aborted) throw error;
    throw interrupted(options.signal);
  });
  if (inMemory !== undefined) {
    // A built-in model's classes are known now; a user's model's once a worker has built it.
    const builtIn = MODELS[resolved.model.name as ModelName] as ModelEntry | undefined;
    checkSplits(inMemory, {
      names: { train: "data.train", test: "data.test" },
      numClasses: builtIn?.classes(resolved.model.options),
    });
  }
  // A model given built: its weights are every replica's initial weights.
  const initialWeights = isLayersModel(options.model)
    ? await flatWeightsOf(options.model)
    : undefined;
  const trainSet = shareDataset(data.train, resolved.data.trainLimit);
  const testSet = shareDataset(data.test, resolved.data.testLimit);
  const steps = stepsPerEpoch(paddedSize(trainSet.count, distributed.batchShards), resolved);
  if (resume) checkResumable(resume, { count: trainSet.count, steps, options: resolved });
  const history = [...(resume?.state.history ?? [])];
  let last: TrainingState | undefined = resume?.state;
  if (last && last.epochsDone >= resolved.epochs) return result(last, history, undefined, 0);

  const save = async (state: TrainingState): Promise<string | undefined> => {
    if (state.weights.some((value) => !Number.isFinite(value))) {
      // Never saved, never kept as the state to restart from: the last finite one stays.
      const epoch = state.stepsDone > 0 ? state.epochsDone + 1 : state.epochsDone;
      const step = state.stepsDone > 0 ? state.stepsDone : steps;
      throw new DivergedError({ epoch, step, what: "the weights are no longer finite" });
    }
    last = state;
    if (store === undefined) return undefined;
    const path = await store.save(state);
    options.onCheckpoint?.(path);
    return path;
  };
  const webgpu = resolved.backend === "webgpu" ? await chooseWebGPUPath() : undefined; // first
  // Before anything is built: refuse what this machine cannot hold (see memory.ts).
  const sizes = modelSizes(resolved.model);
  checkMemory(
    estimateMemory({
      workers: distributed.workers,
      shardBatch: Math.ceil(resolved.batchSize / distributed.batchShards),
      params: sizes?.params,
      layers: sizes?.layers,
      inputValues: sizes?.inputValues,
      optimizerSlots: optimizerSlots(resolved.optimizer) /
        (distributed.shardOptimizer ? distributed.workers : 1),
      dataBytes: trainSet.images.byteLength + testSet.images.byteLength,
    }),
    {
      workers: distributed.workers,
      availableBytes: availableMemory() ?? warnUnchecked(),
      // A software adapter's buffers are host memory, not bound by its limit (measured:
      // llvmpipe, whose maxBufferSize is 2 GiB, took a 2.1 GiB tensor).
      maxBufferBytes: webgpu?.adapter && !isSoftwareAdapter(webgpu.adapter)
        ? webgpu.maxBufferSize
        : undefined,
    },
  );
  const workerUrl = workerUrlOf(options);
  let restarts = 0;
  for (;;) {
    let group: WorkerGroup | ElasticGroup | undefined;
    try {
      if (distributed.processGroup && processes === undefined) {
        // A restart: every process joins again, and continues from rank 0's last state.
        processes = await join(distributed.processGroup);
        last = (await sharePosition(processes, { runId, state: last })).state;
        history.splice(0, history.length, ...(last?.history ?? []));
      }
      const from = last;
      const plan = groupPlan(resolved, steps);
      // Traced once: not again after a restart.
      if (trace && restarts === 0) plan.replica.trace = { steps: trace.steps };
      const stop = options.signal && {
        signal: options.signal,
        error: () =>
          new InterruptedError({
            epochsDone: from?.epochsDone ?? 0,
            stepsDone: from?.stepsDone ?? 0,
            signal: signalName(options.signal),
          }),
      };
      group = where.members
        ? await startElastic(where.members, plan, {
          train: trainSet,
          test: testSet,
          workerUrl: new URL("../../../workers/member_worker.ts", import.meta.url),
          startWeights: from?.weights ?? initialWeights,
          startOptimizer: from?.optimizer.state,
          stop,
        })
        : await WorkerGroup.start(plan, {
          train: trainSet,
          test: testSet,
          workerUrl,
          attempt: restarts,
          startWeights: from?.weights ?? initialWeights,
          startOptimizer: from?.optimizer.state,
          job: processes ? processJob(processes) : soloJob(),
          onTrace: (parts) => {
            traceWritten = writeTrace(trace!.file, parts).catch((error) =>
              console.error(
                `warning: the trace could not be written to ${trace!.file}: ${error.message}`,
              )
            );
          },
          stop,
        });
      if (restarts === 0) {
        options.onStart?.({
          device: group.device,
          options: resolved,
          numParams: group.numParams,
          inputShape: group.inputShape,
          stepsPerEpoch: steps,
          trainCount: trainSet.count,
          testCount: testSet.count,
          startupSeconds: (performance.now() - started) / 1000,
          rendererThreads: group.rendererThreads,
          resumedFrom: resume && {
            path: resume.path,
            epochsDone: resume.state.epochsDone,
            stepsDone: resume.state.stepsDone,
            skipped: resume.skipped,
            history: resume.state.history,
          },
        });
      }
      const final = await runEpochs(group, {
        from,
        steps,
        history,
        options,
        resolved,
        runId,
        save,
        severalProcesses: processes !== undefined,
      });
      await processes?.close();
      await traceWritten;
      return result(final, history, group.device, restarts);
    } catch (error) {
      // The other processes stop too: at the step they agreed on, or told why.
      if (error instanceof InterruptedError) await processes?.close();
      else processes?.abort(error instanceof Error ? error.message : String(error));
      processes = undefined;
      const retry = (error instanceof WorkerError || error instanceof PeerError) &&
        restarts < distributed.maxRestarts;
      if (!retry) throw error;
      restarts++;
      options.onRestart?.({
        restart: restarts,
        maxRestarts: distributed.maxRestarts,
        error,
        from: describePosition(last),
      });
      history.splice(last?.history.length ?? 0); // epochs after the checkpoint are redone
    } finally {
      await group?.close();
    }
  }
}

/** `file` for process `rank`: rank 0 writes `file` itself, rank r `name.rank<r>.ext`. */
function traceFileOf(file: string, rank: number): string {
  if (rank === 0) return file;
  const dot = file.lastIndexOf(".");
  return dot > file.lastIndexOf("/")
    ? `${file.slice(0, dot)}.rank${rank}${file.slice(dot)}`
    : `${file}.rank${rank}`;
}

/** Writes the workers' traced steps to `file` as one Chrome trace (atomically). */
async function writeTrace(file: string, parts: readonly TraceMessage[]): Promise<void> {
  const sorted = [...parts].sort((a, b) => a.rank - b.rank);
  const trace = chromeTrace(sorted.flatMap((p) => [...p.names, ...p.events]), {
    notes: sorted.flatMap((p) => p.notes),
  });
  await writeFileAtomic(file, JSON.stringify(trace) + "\n");
}

/**
 * Starts an elastic group (`serve.elastic`) for `plan`, and hands it every
 * member that joins through the served page's server from now on.
 */
async function startElastic(
  members: NonNullable<ServedRun["members"]>,
  plan: GroupPlan,
  setup: Omit<Parameters<typeof ElasticGroup.start>[1], "onMember" | "onChange">,
): Promise<ElasticGroup> {
  const { replica } = plan;
  const group = await ElasticGroup.start({
    member: {
      backend: replica.backend,
      model: replica.model,
      normalize: replica.normalize,
      kernels: replica.kernels,
      wire: replica.wire,
    },
    localWorkers: plan.workers,
    minMembers: members.minMembers,
    verify: members.verify,
    batchShards: replica.batchShards,
    batchSize: replica.batchSize,
    stepsPerEpoch: replica.stepsPerEpoch,
    epochs: replica.epochs,
    seed: replica.seed,
    lr: replica.lr,
    optimizer: replica.optimizer,
    schedule: replica.schedule,
    evalBatchSize: replica.evalBatchSize,
    stepTimeout: plan.stepTimeout,
    startupTimeout: plan.startupTimeout,
    checkpointEvery: plan.checkpointEvery,
  }, {
    ...setup,
    onMember: members.onMember,
    onChange: (now) =>
      members.show(
        now.map((m) => ({
          name: m.name,
          device: m.device,
          shards: `${m.shards} computed (${m.counted} counted), ` +
            `${Math.round(m.share * 100)}% of the last step` +
            (m.msPerShard > 0 ? `, ${m.msPerShard} ms each` : "") +
            (m.verified > 0 ? `, ${m.verified} verified` : ""),
        })),
      ),
  });
  members.accept((socket, peer) =>
    group.join(new WebSocketChannel(socket, { maxBytes: group.maxFrameBytes, label: peer }), peer)
  );
  return group;
}

/** An elastic run's options, checked against the rest: a usage error names the clash. */
function checkElastic(options: TrainOptions, given: ResolvedTrainOptions): void {
  if (!options.serve?.elastic) return;
  if (given.distributed.processGroup) {
    throw new UsageError(
      "serve.elastic runs in one process: other processes join it (--join), not as a process group",
    );
  }
  if (options.trace) throw new UsageError("trace does not go with serve.elastic (yet)");
  if (options.distributed?.workerUrl !== undefined) {
    throw new UsageError(
      "distributed.workerUrl does not go with serve.elastic: its members run their own worker",
    );
  }
  if (given.profile) throw new UsageError("profile does not go with serve.elastic (yet)");
}

/** Runs the epochs from `from` (or from the start) to the end; resolves with the final state. */
async function runEpochs(
  group: Pick<WorkerGroup, "runEpoch" | "stopAgreed">,
  run: {
    from: TrainingState | undefined;
    steps: number;
    history: EpochRecord[];
    options: TrainOptions;
    resolved: ResolvedTrainOptions;
    runId: string;
    save: (state: TrainingState) => Promise<string | undefined>;
    /**
     * Several processes stop only where they agreed to: a stop asked for here
     * between epochs is carried by the next epoch's first average.
     */
    severalProcesses: boolean;
  },
): Promise<TrainingState> {
  const { from, steps, history, options, resolved, runId } = run;
  let savedPath: string | undefined; // the checkpoint of `state`, once written in this run
  const save = async (state: TrainingState) => savedPath = await run.save(state);
  const config = runConfig(resolved);
  const signal = options.signal;
  let state = from;
  let totals = from?.totals ?? { examples: 0, trainSeconds: 0 };
  const firstEpoch = (from?.epochsDone ?? 0) + 1;
  for (let epoch = firstEpoch; epoch <= resolved.epochs; epoch++) {
    if (group.stopAgreed || (signal?.aborted && !run.severalProcesses)) {
      throw new InterruptedError({
        epochsDone: state?.epochsDone ?? 0,
        stepsDone: state?.stepsDone ?? 0,
        checkpoint: savedPath ?? (state && resolved.checkpoint.dir ? await save(state) : undefined),
        signal: signalName(signal),
      });
    }
    const resuming = epoch === firstEpoch && from !== undefined && from.stepsDone > 0;
    const atStep = (snapshot: StepSnapshot): TrainingState =>
      makeState(config, {
        runId,
        epochsDone: epoch - 1,
        stepsDone: snapshot.stepsDone,
        weights: snapshot.weights,
        weightsChecksum: snapshot.checksum,
        optimizer: snapshot.optimizer,
        history,
        partial: snapshot.sums,
        totals,
      });
    const outcome = await group.runEpoch(epoch, {
      steps,
      fromStep: resuming ? from!.stepsDone : 0,
      base: resuming ? from!.partial : NO_SUMS,
      onStep: options.onStep,
      onEvaluate: options.onEvaluate,
      onSnapshot: async (snapshot) => {
        await save(atStep(snapshot));
      },
      halt: signal,
    });
    if (outcome.halted) {
      state = atStep(outcome);
      const checkpoint = await save(state);
      throw new InterruptedError({
        epochsDone: epoch - 1,
        stepsDone: outcome.stepsDone,
        checkpoint,
        signal: signalName(signal),
      });
    }
    history.push(outcome.record);
    totals = {
      examples: totals.examples + outcome.sums.count,
      trainSeconds: totals.trainSeconds + outcome.sums.trainSeconds,
    };
    state = makeState(config, {
      runId,
      epochsDone: epoch,
      stepsDone: 0,
      weights: outcome.weights,
      weightsChecksum: outcome.checksum,
      optimizer: outcome.optimizer,
      history,
      partial: NO_SUMS,
      totals,
    });
    await save(state);
    await options.onEpoch?.(outcome.record);
  }
  return state!;
}

/** The state to checkpoint. */
function makeState(
  config: RunConfig,
  at: {
    runId: string;
    epochsDone: number;
    stepsDone: number;
    weights: Float32Array<ArrayBuffer>;
    weightsChecksum: string;
    optimizer: OptimizerState;
    history: EpochRecord[];
    partial: EpochSums;
    totals: { examples: number; trainSeconds: number };
  },
): TrainingState {
  return {
    runId: at.runId,
    config,
    epochsDone: at.epochsDone,
    stepsDone: at.stepsDone,
    weights: at.weights,
    weightsChecksum: at.weightsChecksum,
    optimizer: { name: config.optimizer?.name ?? "sgd", lr: config.lr, state: at.optimizer },
    rng: { seed: config.seed },
    history: [...at.history],
    partial: at.partial,
    totals: at.totals,
  };
}

/** Says, once, that the run's memory cannot be checked here; the limit stays unknown. */
function warnUnchecked(): undefined {
  console.error(
    "note: the memory available is unknown without --allow-sys=systemMemoryInfo: " +
      "this run's needs are not checked against it",
  );
  return undefined;
}

/** Float32 vectors the optimizer keeps per weight (SGD 0, momentum 1, Adam 2). */
function optimizerSlots(config: OptimizerConfig): number {
  return Object.keys(createOptimizer(config, { size: 0 }).state().slots).length;
}

/** The module every worker thread runs: the caller's, or the library's replica worker. */
function workerUrlOf(options: TrainOptions): URL | string {
  return options.distributed?.workerUrl ??
    new URL("../../../workers/replica_worker.ts", import.meta.url);
}

/** What the worker group is started with: the replicas' settings and the group's shape. */
function groupPlan(options: ResolvedTrainOptions, stepsPerEpoch: number): GroupPlan {
  const { distributed } = options;
  return {
    replica: {
      backend: options.backend,
      model: options.model,
      normalize: options.data.normalize,
      lr: options.lr,
      optimizer: options.optimizer,
      schedule: options.schedule,
      epochs: options.epochs,
      stepsPerEpoch,
      seed: options.seed,
      batchSize: options.batchSize,
      batchShards: distributed.batchShards,
      shardsPerReplica: distributed.shardsPerReplica,
      evalBatchSize: Math.ceil(options.batchSize / distributed.replicas),
      localWorkers: distributed.workers,
      allReduce: distributed.allReduce,
      shardOptimizer: distributed.shardOptimizer,
      wire: distributed.wire,
      kernels: options.kernels,
      profile: options.profile,
    },
    workers: distributed.workers,
    replicas: distributed.replicas,
    stepTimeout: distributed.stepTimeout,
    startupTimeout: distributed.startupTimeout,
    checkpointEvery: options.checkpoint.every,
  };
}

function result(
  state: TrainingState,
  history: EpochRecord[],
  device: DeviceInfo | undefined,
  restarts: number,
): TrainResult {
  return {
    history,
    weights: state.weights,
    checksum: state.weightsChecksum,
    device,
    examplesPerSec: state.totals.examples / state.totals.trainSeconds,
    restarts,
  };
}

/** The error for a run stopped by `signal` before its first step. */
function interrupted(signal: AbortSignal | undefined): InterruptedError {
  return new InterruptedError({ epochsDone: 0, stepsDone: 0, signal: signalName(signal) });
}

/** The signal an abort named as its reason (`signal.abort("SIGTERM")`), if any. */
function signalName(signal: AbortSignal | undefined): string | undefined {
  return typeof signal?.reason === "string" && signal.reason.startsWith("SIG")
    ? signal.reason
    : undefined;
}

function describePosition(state: TrainingState | undefined): string {
  if (state === undefined) return "the start";
  return `epoch ${state.epochsDone + 1}, step ${state.stepsDone}`;
}
