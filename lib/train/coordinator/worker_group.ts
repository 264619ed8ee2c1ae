/**
 * The coordinator's side of one group of replica workers: starting them,
 * running an epoch step grant by step grant, pairing rank 0's weights with
 * the metrics of the same step for checkpoints, halting every worker at one
 * step boundary, and turning a crash or a stall into a `WorkerError`. What
 * differs with several processes is behind `Job` (job.ts).
 *
 * (Over 500 lines: one class, the coordinator's whole side of the step
 * protocol in protocol.ts, whose handlers share its state.)
 *
 * @module
 */

import { Mailbox } from "../../collective/mailbox.ts";
import { type CollectiveHost, COLLECTIVES } from "../../collective/registry.ts";
import { PeerError } from "../../collective/process_group.ts";
import { WorkerThread } from "../../collective/worker_thread.ts";
import {
  DataError,
  DivergedError,
  ReplicaDivergenceError,
  UsageError,
  WorkerError,
} from "../../errors.ts";
import type { OptimizerState } from "../../optim/mod.ts";
import { ThreadWatch } from "../../util/thread_watch.ts";
import type { DeviceInfo } from "../shared/backend.ts";
import type { EpochSums } from "../shared/checkpoint.ts";
import type { EpochRecord, StepProgress } from "../shared/options.ts";
import type {
  CheckpointMessage,
  EpochEndMessage,
  EpochMessage,
  ErrorMessage,
  EvalProgressMessage,
  GrantMessage,
  InitMessage,
  PhaseMessage,
  ReadyMessage,
  ReplicaConfig,
  StartMessage,
  StepMessage,
  StepTiming,
  TraceMessage,
  WeightsMessage,
} from "../shared/protocol.ts";
import { blameStall, Watchdog } from "./watchdog.ts";
import { shareCoresAmongWorkers } from "./webgpu_path.ts";
import { checkDataFitsModel, type Dataset } from "../../data/dataset.ts";
import { GRANT_AHEAD, type Job, type StopProgress, totalled } from "./job.ts";

/** The weights at a step boundary, with the metrics summed up to it. */
export interface StepSnapshot {
  /** Steps done in the epoch. */
  stepsDone: number;
  /** Metric sums of the epoch up to `stepsDone`. */
  sums: EpochSums;
  /** Weights after `stepsDone` steps. */
  weights: Float32Array<ArrayBuffer>;
  /** SHA-256 of `weights`. */
  checksum: string;
  /** The optimizer's state after `stepsDone` steps. */
  optimizer: OptimizerState;
}

/** How an epoch ended: completed, or halted at a step boundary. */
export type EpochOutcome =
  | {
    halted: false;
    record: EpochRecord;
    sums: EpochSums;
    weights: Float32Array<ArrayBuffer>;
    checksum: string;
    optimizer: OptimizerState;
  }
  | ({ halted: true } & StepSnapshot);

/** What {@linkcode WorkerGroup.runEpoch} needs besides the epoch number. */
export interface EpochPlan {
  /** Global steps in the epoch. */
  steps: number;
  /** Step to start from (0, or where a checkpoint left off). */
  fromStep: number;
  /** Metric sums of the steps before `fromStep`. */
  base: EpochSums;
  /** Called after every global step. */
  onStep?: (progress: StepProgress) => void;
  /** Called as the workers evaluate the test set after the epoch's last step. */
  onEvaluate?: (progress: { epoch: number; done: number; total: number }) => void;
  /** Called with rank 0's weights every `checkpointEvery` steps; awaited before the epoch ends. */
  onSnapshot?: (snapshot: StepSnapshot) => Promise<void>;
  /** When aborted, every worker stops at the next step boundary. */
  halt?: AbortSignal;
}

/** Per-epoch bookkeeping of the step messages of all ranks. */
interface EpochProgress {
  epoch: number;
  plan: EpochPlan;
  startedAt: number;
  sums: EpochSums;
  reported: number[];
  timings: StepTiming[][];
  completed: number;
  granted: number;
  /** Sums at the step boundaries where rank 0 sends a checkpoint. */
  sumsAt: Map<number, EpochSums>;
  checkpoints: Map<number, CheckpointMessage>;
  saving: Promise<void>;
  /** Resolved once every worker waits at the last granted step after a halt request. */
  halted: PromiseWithResolvers<void>;
  /** Per rank: test examples evaluated so far. */
  evaluated: number[];
  /** Step counts after which rank 0 sends its weights for a checkpoint. */
  snapshotAfter: Set<number>;
}

/** What a group of workers is started with: the replicas' settings and the group's shape. */
export interface GroupPlan {
  /** What every replica is told; identical on every rank. */
  replica: ReplicaConfig;
  /** Worker threads in this process. */
  workers: number;
  /** Replicas in the job (over all processes). */
  replicas: number;
  /** Step timeout in seconds, or undefined for the adaptive default (see `DistributedOptions`). */
  stepTimeout: number | undefined;
  /** Seconds to start the workers, and to finish the first step. */
  startupTimeout: number;
  /** Steps between checkpoints within an epoch (0: only after each epoch). */
  checkpointEvery: number;
}

/** Spawned workers, their mailboxes, and the all-reduce that joins them. */
export class WorkerGroup {
  /** The device of worker 0. */
  readonly device: DeviceInfo;
  /** Number of trainable weights (frozen ones and statistics not counted). */
  readonly numParams: number;
  /** The model's input: `[height, width, channels]`. */
  readonly inputShape: readonly [number, number, number];
  /** `LP_NUM_THREADS` as the workers saw it when they created their devices. */
  readonly rendererThreads: string | undefined;
  readonly #plan: GroupPlan;
  readonly #testCount: number;
  readonly #mailboxes: Mailbox[];
  readonly #collective: CollectiveHost;
  readonly #job: Job;
  readonly #watchdog: Watchdog;
  readonly #threads: ThreadWatch;
  #closed: Promise<void> | null = null;
  #progress: EpochProgress | null = null;
  #failure: Error | null = null;
  #stepsDone = 0;
  #lastStepAt = performance.now();
  #slowestStepMs = 0;
  /** Per rank: the steps it has reported since the group started. */
  readonly #reportedByRank: number[] = [];

  private constructor(parts: {
    plan: GroupPlan;
    testCount: number;
    mailboxes: Mailbox[];
    ready: ReadyMessage[];
    rendererThreads: string | undefined;
    collective: CollectiveHost;
    threads: ThreadWatch;
    job: Job;
  }) {
    this.#job = parts.job;
    this.#plan = parts.plan;
    this.#testCount = parts.testCount;
    this.#mailboxes = parts.mailboxes;
    this.#collective = parts.collective;
    this.#threads = parts.threads;
    this.device = parts.ready[0].device;
    this.numParams = parts.ready[0].numParams;
    this.inputShape = parts.ready[0].inputShape;
    this.rendererThreads = parts.rendererThreads;
    this.#watchdog = new Watchdog({
      limitMs: () => this.#stepLimitMs(),
      onExpire: (idleMs) => this.#onStall(idleMs),
    });
  }

  /**
   * Spawns the workers and waits until every replica is built and holds the
   * same weights: `startWeights` (a checkpoint's, with its optimizer state
   * `startOptimizer`) or rank 0's initial ones.
   */
  static async start(
    plan: GroupPlan,
    setup: {
      train: Dataset;
      test: Dataset;
      workerUrl: URL | string;
      attempt: number;
      /** This process's view of the job: alone, or one of several processes. */
      job: Job;
      startWeights?: Float32Array<ArrayBuffer>;
      startOptimizer?: OptimizerState;
      /**
       * Aborting `signal` while the workers start stops them at once (they
       * are waiting on their devices, not computing) and rejects with `error()`.
       */
      stop?: { signal: AbortSignal; error: () => Error };
      /** With `plan.replica.trace`: called once every worker has sent its traced steps. */
      onTrace?: (parts: TraceMessage[]) => void;
    },
  ): Promise<WorkerGroup> {
    const cores = shareCoresAmongWorkers(plan.workers);
    const threads = new ThreadWatch();
    const mailboxes: Mailbox[] = [];
    let group: WorkerGroup | null = null;
    let early: Error | null = null;
    const fail = (error: Error) => {
      if (group) group.fail(error);
      else if (!early) {
        early = error;
        mailboxes.forEach((m) => m.fail(error));
      }
    };
    for (let rank = 0; rank < plan.workers; rank++) {
      const thread = new WorkerThread(setup.workerUrl, {
        name: `replica-${rank}`,
        label: `coordinator↔worker ${rank}`,
      });
      threads.add(thread);
      const mailbox = new Mailbox(thread, {
        onError: (error) => fail(new WorkerError(rank, error.message)),
      });
      mailbox.handle<ErrorMessage>(
        "error",
        (m) =>
          fail(
            m.diverged
              ? new DivergedError(m.diverged)
              : m.model
              ? new UsageError(m.message)
              : new WorkerError(rank, m.message),
          ),
      );
      mailboxes.push(mailbox);
    }
    const config = plan.replica;
    const onStop = () => fail(setup.stop!.error());
    setup.stop?.signal.addEventListener("abort", onStop, { once: true });
    try {
      if (setup.stop?.signal.aborted) onStop();
      mailboxes.forEach((mailbox, rank) => {
        const init: InitMessage = {
          type: "init",
          rank: setup.job.firstRank(plan.workers) + rank,
          worldSize: plan.replicas,
          localRank: rank,
          config,
          train: setup.train,
          test: setup.test,
          attempt: setup.attempt,
        };
        mailbox.send(init);
      });
      const readyRanks = new Set<number>();
      // What each worker is doing while it starts, to say what did not finish in time.
      const phases = mailboxes.map(() => "starting its thread");
      mailboxes.forEach((mailbox) =>
        mailbox.handle<PhaseMessage>("phase", (m) => phases[m.rank] = m.phase)
      );
      const startup = setTimeout(() => {
        const late = mailboxes.findIndex((_, rank) => !readyRanks.has(rank));
        fail(
          new WorkerError(
            late,
            `not ready within the start-up timeout of ${plan.startupTimeout} s: ` +
              `it was still ${phases[late]}`,
          ),
        );
      }, plan.startupTimeout * 1000);
      const ready = await Promise.all(
        mailboxes.map((m, rank) =>
          m.receive<ReadyMessage>("ready").then((message) => {
            readyRanks.add(rank);
            return message;
          })
        ),
      ).finally(() => {
        clearTimeout(startup);
        cores.restore(); // every device exists now
      });
      const { numWeights, numParams, numReduced } = ready[0];
      checkDataFitsModel(setup, ready[0]);
      if (setup.startWeights && setup.startWeights.length !== numWeights) {
        throw new DataError(
          `the checkpoint holds ${setup.startWeights.length} weights but this model has ${numWeights}`,
        );
      }
      const slot = Object.values(setup.startOptimizer?.slots ?? {})[0];
      if (slot && slot.length !== numParams) {
        throw new DataError(
          `the checkpoint's optimizer state covers ${slot.length} weights but this model trains ${numParams}`,
        );
      }
      // Every process starts from rank 0's weights (its first worker's, or a checkpoint's).
      const startWeights = await setup.job.startWeights(setup.startWeights, ready[0].weights!);
      const collective = COLLECTIVES[config.allReduce].host({
        worldSize: plan.workers,
        length: numReduced,
        parts: config.shardsPerReplica,
        bf16Length: config.wire === "bf16" ? numParams : 0,
        mailboxes,
        processes: setup.job.processes,
        onError: fail,
        stop: {
          requested: () => (group ? group.#progress?.plan.halt?.aborted ?? false : false),
          onRound: (raised) => group && group.#onRound(raised),
        },
      });
      mailboxes.forEach((mailbox, rank) => {
        const weights = startWeights ?? (rank === 0 ? undefined : ready[0].weights);
        const start: StartMessage = {
          type: "start",
          weights,
          optimizer: setup.startOptimizer,
          collective: collective.joinInfo,
        };
        mailbox.send(start);
      });
      const started: WorkerGroup = new WorkerGroup({
        plan,
        testCount: setup.test.count,
        mailboxes,
        ready,
        rendererThreads: cores.threads,
        collective,
        threads,
        job: setup.job,
      });
      group = started;
      setup.stop?.signal.removeEventListener("abort", onStop);
      const traces: TraceMessage[] = [];
      mailboxes.forEach((mailbox) => {
        mailbox.handle<TraceMessage>("trace", (message) => {
          traces.push(message);
          if (traces.length === plan.workers) setup.onTrace?.(traces);
        });
        mailbox.handle<StepMessage>("step", (message) => started.#onStep(message));
        mailbox.handle<CheckpointMessage>("checkpoint", (m) => started.#onCheckpoint(m));
        mailbox.handle<EvalProgressMessage>("evalProgress", (m) => started.#onEvalProgress(m));
      });
      return started;
    } catch (error) {
      threads.mark();
      mailboxes.forEach((m) => m.close());
      await threads.exited();
      setup.stop?.signal.removeEventListener("abort", onStop);
      throw early ?? error;
    }
  }

  /**
   * Several processes: whether they agreed to stop (one of them was asked
   * to); the run ends at the step boundary they agreed on, or at the end of
   * the epoch. Always false for one process, whose own `halt` signal says it.
   */
  get stopAgreed(): boolean {
    return this.#job.stopAgreed;
  }

  /**
   * Runs epoch `epoch` (from 1) from `plan.fromStep` on every worker.
   * Resolves when all have evaluated, or, once `plan.halt` is aborted, when
   * all have stopped at the same step boundary (with rank 0's weights there).
   */
  async runEpoch(epoch: number, plan: EpochPlan): Promise<EpochOutcome> {
    const startedAt = performance.now();
    const progress: EpochProgress = {
      epoch,
      plan,
      startedAt,
      sums: { ...plan.base },
      reported: new Array(plan.steps).fill(0),
      timings: [],
      completed: plan.fromStep,
      granted: Math.min(plan.steps, plan.fromStep + GRANT_AHEAD),
      sumsAt: new Map(),
      checkpoints: new Map(),
      saving: Promise.resolve(),
      halted: Promise.withResolvers<void>(),
      evaluated: [],
      snapshotAfter: new Set(snapshotSteps(this.#plan.checkpointEvery, plan.steps)),
    };
    this.#job.beginEpoch();
    this.#progress = progress;
    this.#lastStepAt = startedAt;
    const onAbort = () => this.#maybeHalt();
    plan.halt?.addEventListener("abort", onAbort);
    try {
      this.#mailboxes.forEach((mailbox) => {
        const message: EpochMessage = {
          type: "epoch",
          epoch,
          fromStep: plan.fromStep,
          grantUpTo: progress.granted,
          snapshotAfter: [...progress.snapshotAfter],
        };
        mailbox.send(message);
      });
      this.#maybeHalt();
      const ends = this.#mailboxes.map((m) => m.receive<EpochEndMessage>("epochEnd"));
      const first = await Promise.race([
        Promise.all(ends).then((messages) => ({ ends: messages })),
        progress.halted.promise.then(() => ({ ends: null })),
      ]);
      await progress.saving;
      if (first.ends === null) {
        return { halted: true, ...(await this.#snapshotNow(progress)) };
      }
      return await this.#finishEpoch(progress, first.ends);
    } finally {
      plan.halt?.removeEventListener("abort", onAbort);
    }
  }

  /** Stops every worker, making every pending receive reject with `error`. */
  fail(error: Error): void {
    if (this.#failure) return;
    this.#failure = error;
    // Wake replicas blocked in the all-reduce, waiting for the one that failed.
    this.#collective.abort();
    for (const mailbox of this.#mailboxes) mailbox.fail(error);
    void this.close();
  }

  /**
   * Terminates every worker; resolves once their threads have exited, so
   * that the process can exit without racing the graphics driver's teardown
   * (see thread_watch.ts).
   */
  close(): Promise<void> {
    if (this.#closed) return this.#closed;
    this.#watchdog.stop();
    this.#threads.mark();
    for (const mailbox of this.#mailboxes) mailbox.close();
    // A thread waiting (for its device, a message) ends within milliseconds on an idle machine,
    // longer on a loaded one (this warning came up with 3 s, two test files and two training
    // workers on 2 cores); one spinning in a synchronous loop is not stopped by Deno (2.9) at
    // all. It no longer holds the process (see worker_thread.ts): it ends when the process does.
    this.#closed = this.#threads.exited().then((allExited) => {
      if (allExited) return;
      console.error(
        "warning: a worker thread did not stop when terminated (in 10 s: it runs a synchronous " +
          "loop, which Deno 2.9 cannot interrupt); it runs on until this process exits",
      );
    });
    return this.#closed;
  }

  async #finishEpoch(progress: EpochProgress, ends: EpochEndMessage[]): Promise<EpochOutcome> {
    this.#watchdog.touch();
    const differing = ends.filter((end) => end.checksum !== ends[0].checksum);
    if (differing.length > 0) {
      const ranks = differing.map((end) => end.rank).join(", ");
      throw new ReplicaDivergenceError(
        `after epoch ${progress.epoch}: the weights of worker(s) ${ranks} differ from worker 0's`,
      );
    }
    const local = {
      checksum: ends[0].checksum,
      testCorrect: ends.reduce((sum, end) => sum + end.testCorrect, 0),
      testCount: ends.reduce((sum, end) => sum + end.testCount, 0),
      stop: progress.plan.halt?.aborted ?? false,
      ...progress.sums,
    };
    const everyone = await this.#job.endEpoch(local, progress.epoch);
    progress.sums = totalled(progress.sums, everyone);
    const sums = this.#sumsNow(progress);
    const testCorrect = everyone.reduce((sum, process) => sum + process.testCorrect, 0);
    const testCount = everyone.reduce((sum, process) => sum + process.testCount, 0);
    return {
      halted: false,
      sums,
      weights: ends[0].weights!,
      checksum: ends[0].checksum,
      optimizer: ends[0].optimizer!,
      record: {
        epoch: progress.epoch,
        loss: sums.lossSum / sums.count,
        trainAcc: sums.correct / sums.count,
        testAcc: testCorrect / testCount,
        examplesPerSec: sums.count / sums.trainSeconds,
        seconds: sums.seconds,
      },
    };
  }

  /** The sums of `progress` now; `trainSeconds` stops at the epoch's last step. */
  #sumsNow(progress: EpochProgress): EpochSums {
    const elapsed = (performance.now() - progress.startedAt) / 1000;
    return { ...progress.sums, seconds: progress.plan.base.seconds + elapsed };
  }

  /**
   * Rank 0's weights at the boundary where the halted workers wait (and the
   * optimizer state, which with a sharded optimizer every worker helps gather).
   */
  async #snapshotNow(progress: EpochProgress): Promise<StepSnapshot> {
    const asked = this.#plan.replica.shardOptimizer ? this.#mailboxes : this.#mailboxes.slice(0, 1);
    asked.forEach((mailbox) => mailbox.send({ type: "getWeights" }));
    const { weights, checksum, optimizer } = await this.#mailboxes[0].receive<WeightsMessage>(
      "weights",
    );
    const sums = await this.#job.total(this.#sumsNow(progress), "stop");
    return { stepsDone: progress.completed, sums, weights, checksum, optimizer };
  }

  /** Once a stop was asked for (or agreed): resolve when every worker waits at its boundary. */
  #maybeHalt(): void {
    const progress = this.#progress;
    if (progress && this.#job.halted(this.#stopProgress(progress))) progress.halted.resolve();
  }

  #stopProgress(progress: EpochProgress): StopProgress {
    return {
      steps: progress.plan.steps,
      completed: progress.completed,
      granted: progress.granted,
      asked: progress.plan.halt?.aborted ?? false,
    };
  }

  #onStep(message: StepMessage): void {
    const progress = this.#progress;
    if (progress === null || message.epoch !== progress.epoch) {
      throw new Error(`worker ${message.rank} reported a step of an unexpected epoch`);
    }
    this.#watchdog.touch();
    this.#reportedByRank[message.rank] = (this.#reportedByRank[message.rank] ?? 0) + 1;
    progress.sums.lossSum += message.lossSum;
    progress.sums.correct += message.correct;
    progress.sums.count += message.count;
    if (message.timing) {
      (progress.timings[message.step] ??= [])[message.rank] = message.timing;
    }
    const done = ++progress.reported[message.step];
    if (done < this.#mailboxes.length) return;
    // Every worker has finished this step.
    const now = performance.now();
    if (this.#stepsDone > 0) {
      this.#slowestStepMs = Math.max(this.#slowestStepMs, now - this.#lastStepAt);
    }
    this.#stepsDone++;
    this.#lastStepAt = now;
    progress.completed = message.step + 1;
    const seconds = (now - progress.startedAt) / 1000;
    progress.sums.trainSeconds = progress.plan.base.trainSeconds + seconds;
    if (progress.snapshotAfter.has(progress.completed)) {
      progress.sumsAt.set(progress.completed, { ...this.#sumsNow(progress) });
      this.#pairCheckpoint(progress, progress.completed);
    }
    const stop = this.#stopProgress(progress);
    if (this.#job.mayGrant(stop)) {
      const upTo = Math.min(this.#job.grantLimit(stop), progress.completed + GRANT_AHEAD);
      if (upTo > progress.granted) {
        progress.granted = upTo;
        const grant: GrantMessage = { type: "grant", upTo };
        this.#mailboxes.forEach((mailbox) => mailbox.send(grant));
      }
    }
    const timings = progress.timings[message.step];
    delete progress.timings[message.step];
    progress.plan.onStep?.({
      epoch: progress.epoch,
      step: progress.completed,
      steps: progress.plan.steps,
      loss: progress.sums.lossSum / progress.sums.count,
      trainAcc: progress.sums.correct / progress.sums.count,
      seconds: progress.plan.base.seconds + seconds,
      timings,
    });
    this.#maybeHalt();
  }

  /** Several processes, after each average: whether any asked to stop (see `Job.onRound`). */
  #onRound(raised: boolean): void {
    const progress = this.#progress;
    if (progress === null) return;
    const at = { fromStep: progress.plan.fromStep, steps: progress.plan.steps };
    if (this.#job.onRound(raised, at)) this.#maybeHalt();
  }

  #onEvalProgress(message: EvalProgressMessage): void {
    this.#watchdog.touch();
    const progress = this.#progress;
    if (progress === null) return;
    progress.evaluated[message.rank] = message.done;
    progress.plan.onEvaluate?.({
      epoch: progress.epoch,
      done: progress.evaluated.reduce((sum, done) => sum + (done ?? 0), 0),
      total: this.#testCount,
    });
  }

  #onCheckpoint(message: CheckpointMessage): void {
    const progress = this.#progress;
    if (progress === null || message.epoch !== progress.epoch) return;
    progress.checkpoints.set(message.stepsDone, message);
    this.#pairCheckpoint(progress, message.stepsDone);
  }

  /** Hands rank 0's weights and the sums of the same step to `onSnapshot`, once both are in. */
  #pairCheckpoint(progress: EpochProgress, stepsDone: number): void {
    const sums = progress.sumsAt.get(stepsDone);
    const checkpoint = progress.checkpoints.get(stepsDone);
    if (!sums || !checkpoint) return;
    progress.sumsAt.delete(stepsDone);
    progress.checkpoints.delete(stepsDone);
    const onSnapshot = progress.plan.onSnapshot;
    if (!onSnapshot) return;
    progress.saving = progress.saving.then(async () => {
      await onSnapshot({
        stepsDone,
        // The metrics of every process's shards, at the same step on every process.
        sums: await this.#job.total(sums, "snapshot"),
        weights: checkpoint.weights,
        checksum: checkpoint.checksum,
        optimizer: checkpoint.optimizer,
      });
    });
    progress.saving.catch((error) => this.fail(error instanceof Error ? error : new Error(error)));
  }

  /** The step timeout now: the user's, or adaptive (see `TrainOptions.stepTimeout`). */
  #stepLimitMs(): number {
    if (this.#plan.stepTimeout !== undefined) return this.#plan.stepTimeout * 1000;
    if (this.#stepsDone === 0) return this.#plan.startupTimeout * 1000;
    return Math.max(5 * 60_000, 20 * this.#slowestStepMs);
  }

  /** No progress for too long: blame the workers the others wait for, and stop. */
  #onStall(idleMs: number): void {
    const reported = this.#mailboxes.map((_, rank) => this.#reportedByRank[rank] ?? 0);
    const limit = Math.round(this.#stepLimitMs() / 1000);
    const firstStep = this.#stepsDone === 0 && this.#plan.stepTimeout === undefined;
    const over = `no progress for ${Math.round(idleMs / 1000)} s, over the ` +
      (firstStep
        ? `start-up timeout of ${limit} s (the first step, which compiles the shaders, ` +
          "did not finish)"
        : `step timeout of ${limit} s`);
    const behind = reported.some((steps) => steps < Math.max(...reported));
    const remote = behind ? undefined : this.#collective.waitingFor?.();
    if (remote !== undefined) {
      // Every worker here has contributed: the all-reduce waits for another process.
      this.fail(new PeerError(`${over}: the all-reduce waits for ${remote}`));
      return;
    }
    const blame = blameStall({ reported, allReduceLaggards: this.#collective.laggards() });
    const others = blame.waiting.length > 0
      ? `; worker(s) ${blame.waiting.join(", ")} waited for it`
      : "";
    const who = blame.alsoStuck.length > 0 ? ` (and worker(s) ${blame.alsoStuck.join(", ")})` : "";
    this.fail(new WorkerError(blame.rank, `${over}${who}${others}`));
  }
}

/**
 * The step counts within an epoch of `steps` after which a checkpoint is
 * taken every `every` steps (0: none): multiples of `every`, except the last
 * step, whose weights the epoch's end brings anyway.
 */
function snapshotSteps(every: number, steps: number): number[] {
  const after: number[] = [];
  for (let done = every; every > 0 && done < steps; done += every) after.push(done);
  return after;
}
