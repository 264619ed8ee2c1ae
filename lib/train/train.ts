/**
 * The coordinator: starts one worker per replica, shares the data set with
 * them, runs the epochs, serves the all-reduce, gathers the metrics and checks
 * that every replica holds the same weights.
 *
 * @module
 */

import { PostMessageChannel } from "../collective/channel.ts";
import { Mailbox } from "../collective/mailbox.ts";
import {
  abortSharedAllReduce,
  createSharedAllReduceBuffer,
  sharedAllReduceRounds,
} from "../collective/shared_all_reduce.ts";
import { StarAllReduceHub } from "../collective/star_all_reduce.ts";
import { stepsPerEpoch } from "../data/batches.ts";
import { type Dataset, loadFashionMNIST } from "../data/fashion_mnist.ts";
import { DistributedSampler } from "../data/sampler.ts";
import { ReplicaDivergenceError, WorkerError } from "../errors.ts";
import type { DeviceInfo } from "./backend.ts";
import { Watchdog } from "./watchdog.ts";
import {
  type EpochRecord,
  type ResolvedTrainOptions,
  resolveTrainOptions,
  type TrainOptions,
} from "./options.ts";
import type {
  EpochEndMessage,
  ErrorMessage,
  EvalProgressMessage,
  InitMessage,
  ReadyMessage,
  ReplicaConfig,
  StartMessage,
  StepMessage,
  StepTiming,
  WeightsMessage,
} from "./protocol.ts";

/** What {@linkcode train} resolves to. */
export interface TrainResult {
  /** One record per epoch. */
  history: EpochRecord[];
  /** Final weights, flattened in `model.getWeights()` order. */
  weights: Float32Array;
  /** SHA-256 of `weights`, equal on every replica. */
  checksum: string;
  /** The device the workers ran on. */
  device: DeviceInfo;
  /** Training examples per second over all epochs (evaluation excluded). */
  examplesPerSec: number;
}

/**
 * Trains NiN on Fashion-MNIST, data-parallel across `options.workers` Deno
 * workers, and resolves with the per-epoch metrics and the final weights.
 *
 * Each worker holds a replica and computes the gradient of its share of every
 * global batch; the gradients are averaged (weighted by examples) and every
 * replica applies the same SGD update. Replicas are compared by weight
 * checksum after every epoch. Throws a `UsageError` for bad options, a
 * `DataError` for missing or corrupt data, a `WorkerError` naming the worker
 * that failed (all workers are stopped), or a `ReplicaDivergenceError`.
 *
 * @example A small run on two workers
 * ```ts ignore
 * import { train } from "../../mod.ts";
 *
 * const { history } = await train({
 *   workers: 2,
 *   epochs: 2,
 *   inputSize: 67,
 *   width: 0.25,
 *   trainLimit: 2048,
 *   testLimit: 512,
 *   onEpoch: (r) => console.log(`epoch ${r.epoch}: test acc ${r.testAcc.toFixed(3)}`),
 * });
 * ```
 */
export async function train(options: TrainOptions = {}): Promise<TrainResult> {
  const started = performance.now();
  const resolved = resolveTrainOptions(options);
  const data = options.data ??
    await loadFashionMNIST({ dataDir: options.dataDir, download: options.download });
  const trainSet = shareDataset(data.train, resolved.trainLimit);
  const testSet = shareDataset(data.test, resolved.testLimit);
  const steps = stepsPerEpoch(
    new DistributedSampler(trainSet.count, { rank: 0, worldSize: resolved.workers }).totalSize,
    resolved,
  );
  const workerUrl = options.workerUrl ??
    new URL("../../workers/replica_worker.ts", import.meta.url);
  const group = await WorkerGroup.start(resolved, { train: trainSet, test: testSet, workerUrl });
  try {
    options.onStart?.({
      device: group.device,
      options: resolved,
      numParams: group.numParams,
      stepsPerEpoch: steps,
      trainCount: trainSet.count,
      testCount: testSet.count,
      startupSeconds: (performance.now() - started) / 1000,
      rendererThreads: group.rendererThreads,
    });
    const history: EpochRecord[] = [];
    let checksum = "";
    for (let epoch = 1; epoch <= resolved.epochs; epoch++) {
      const result = await group.runEpoch(epoch, steps, options.onStep);
      checksum = result.checksum;
      history.push(result.record);
      await options.onEpoch?.(result.record);
    }
    const final = await group.fetchWeights();
    if (final.checksum !== checksum) {
      throw new ReplicaDivergenceError(
        "at the end: worker 0's weights changed after the last epoch's check",
      );
    }
    return {
      history,
      weights: final.weights,
      checksum,
      device: group.device,
      examplesPerSec: group.examplesSeen / group.trainSeconds,
    };
  } finally {
    group.close();
  }
}

/** Copies the first `limit` examples of `dataset` into shared memory, visible to every worker. */
function shareDataset(dataset: Dataset, limit: number | undefined): Dataset {
  const count = Math.min(limit ?? dataset.count, dataset.count);
  const pixels = dataset.rows * dataset.cols;
  const images = new Uint8Array(new SharedArrayBuffer(count * pixels));
  images.set(dataset.images.subarray(0, count * pixels));
  const labels = new Uint8Array(new SharedArrayBuffer(count));
  labels.set(dataset.labels.subarray(0, count));
  return { images, labels, count, rows: dataset.rows, cols: dataset.cols };
}

/** How long a worker may take to load, create its device and build its replica. */
const STARTUP_TIMEOUT_S = 600;

/** Per-epoch accumulation of the step messages of all ranks. */
interface EpochProgress {
  epoch: number;
  steps: number;
  startedAt: number;
  reported: number[];
  timings: StepTiming[][];
  lossSum: number;
  correct: number;
  count: number;
  trainSeconds: number;
  onStep: TrainOptions["onStep"];
}

/** The running workers, their mailboxes and the all-reduce hub. */
class WorkerGroup {
  readonly device: DeviceInfo;
  readonly numParams: number;
  /** `LP_NUM_THREADS` as the workers saw it when they created their devices. */
  readonly rendererThreads: string | undefined;
  examplesSeen = 0;
  trainSeconds = 0;
  readonly #workers: Worker[];
  readonly #mailboxes: Mailbox[];
  readonly #allReduceBuffer: SharedArrayBuffer | undefined;
  readonly #hub: StarAllReduceHub | undefined;
  readonly #stepTimeout: number | undefined;
  readonly #watchdog: Watchdog;
  #progress: EpochProgress | null = null;
  #failure: Error | null = null;
  #stepsDone = 0;
  #lastStepAt = performance.now();
  #slowestStepMs = 0;

  private constructor(parts: {
    workers: Worker[];
    mailboxes: Mailbox[];
    ready: ReadyMessage[];
    rendererThreads: string | undefined;
    allReduceBuffer: SharedArrayBuffer | undefined;
    hub: StarAllReduceHub | undefined;
    stepTimeout: number | undefined;
  }) {
    this.#workers = parts.workers;
    this.#mailboxes = parts.mailboxes;
    this.#allReduceBuffer = parts.allReduceBuffer;
    this.#hub = parts.hub;
    this.#stepTimeout = parts.stepTimeout;
    this.#watchdog = new Watchdog({
      limitMs: () => this.#stepLimitMs(),
      onExpire: (idleMs) => this.#onStall(idleMs),
    });
    this.device = parts.ready[0].device;
    this.numParams = parts.ready[0].numParams;
    this.rendererThreads = parts.rendererThreads;
  }

  /** Spawns the workers, waits until every replica is built and holds rank 0's weights. */
  static async start(
    options: ResolvedTrainOptions,
    setup: { train: Dataset; test: Dataset; workerUrl: URL | string },
  ): Promise<WorkerGroup> {
    const { train, test, workerUrl } = setup;
    const cores = shareCoresAmongWorkers(options.workers);
    const workers: Worker[] = [];
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
    for (let rank = 0; rank < options.workers; rank++) {
      const worker = new Worker(workerUrl, { type: "module", name: `replica-${rank}` });
      const mailbox = new Mailbox(
        new PostMessageChannel(worker, {
          close: () => worker.terminate(),
          label: `coordinator↔worker ${rank}`,
        }),
        { onError: (error) => fail(new WorkerError(rank, error.message)) },
      );
      mailbox.handle<ErrorMessage>("error", (m) => fail(new WorkerError(rank, m.message)));
      workers.push(worker);
      mailboxes.push(mailbox);
    }
    const config: ReplicaConfig = {
      backend: options.backend,
      model: options.model,
      lr: options.lr,
      seed: options.seed,
      batchSize: options.batchSize,
      evalBatchSize: Math.ceil(options.batchSize / options.workers),
      allReduce: options.allReduce,
      profile: options.profile,
    };
    try {
      mailboxes.forEach((mailbox, rank) => {
        const init: InitMessage = {
          type: "init",
          rank,
          worldSize: options.workers,
          config,
          train,
          test,
        };
        mailbox.send(init);
      });
      const readyRanks = new Set<number>();
      const startup = setTimeout(() => {
        const late = mailboxes.findIndex((_, rank) => !readyRanks.has(rank));
        fail(new WorkerError(late, `not ready ${STARTUP_TIMEOUT_S} s after it was started`));
      }, STARTUP_TIMEOUT_S * 1000);
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
      const allReduceBuffer = options.allReduce === "shared"
        ? createSharedAllReduceBuffer({ worldSize: options.workers, length: ready[0].numParams })
        : undefined;
      const hub = options.allReduce === "star" ? new StarAllReduceHub(mailboxes) : undefined;
      mailboxes.forEach((mailbox, rank) => {
        const weights = rank === 0 ? undefined : ready[0].weights;
        const start: StartMessage = { type: "start", weights, allReduceBuffer };
        mailbox.send(start);
      });
      group = new WorkerGroup({
        workers,
        mailboxes,
        ready,
        rendererThreads: cores.threads,
        allReduceBuffer,
        hub,
        stepTimeout: options.stepTimeout,
      });
      mailboxes.forEach((mailbox) => {
        mailbox.handle<StepMessage>("step", (message) => group!.#onStep(message));
        mailbox.handle<EvalProgressMessage>("evalProgress", () => group!.#watchdog.touch());
      });
      return group;
    } catch (error) {
      mailboxes.forEach((m) => m.close());
      throw early ?? error;
    }
  }

  /** Runs one epoch on every worker; resolves when all have evaluated and checked in. */
  async runEpoch(
    epoch: number,
    steps: number,
    onStep: TrainOptions["onStep"],
  ): Promise<{ record: EpochRecord; checksum: string }> {
    const progress: EpochProgress = {
      epoch,
      steps,
      startedAt: performance.now(),
      reported: new Array(steps).fill(0),
      timings: [],
      lossSum: 0,
      correct: 0,
      count: 0,
      trainSeconds: 0,
      onStep,
    };
    this.#progress = progress;
    this.#lastStepAt = progress.startedAt;
    // Workers count epochs from 0, as DistributedSampler.setEpoch does.
    this.#mailboxes.forEach((mailbox) => mailbox.send({ type: "epoch", epoch: epoch - 1 }));
    const ends = await Promise.all(
      this.#mailboxes.map((m) => m.receive<EpochEndMessage>("epochEnd")),
    );
    this.#watchdog.touch();
    const seconds = (performance.now() - progress.startedAt) / 1000;
    const differing = ends.filter((end) => end.checksum !== ends[0].checksum);
    if (differing.length > 0) {
      const ranks = differing.map((end) => end.rank).join(", ");
      throw new ReplicaDivergenceError(
        `after epoch ${epoch}: the weights of worker(s) ${ranks} differ from worker 0's`,
      );
    }
    const testCorrect = ends.reduce((sum, end) => sum + end.testCorrect, 0);
    const testCount = ends.reduce((sum, end) => sum + end.testCount, 0);
    this.examplesSeen += progress.count;
    this.trainSeconds += progress.trainSeconds;
    return {
      checksum: ends[0].checksum,
      record: {
        epoch,
        loss: progress.lossSum / progress.count,
        trainAcc: progress.correct / progress.count,
        testAcc: testCorrect / testCount,
        examplesPerSec: progress.count / progress.trainSeconds,
        seconds,
      },
    };
  }

  /** Rank 0's weights and their checksum. */
  async fetchWeights(): Promise<WeightsMessage> {
    this.#mailboxes[0].send({ type: "getWeights" });
    return await this.#mailboxes[0].receive<WeightsMessage>("weights");
  }

  /** Stops every worker, making every pending receive reject with `error`. */
  fail(error: Error): void {
    if (this.#failure) return;
    this.#failure = error;
    // Wake replicas blocked in a shared all-reduce barrier, waiting for the one that failed.
    if (this.#allReduceBuffer) abortSharedAllReduce(this.#allReduceBuffer);
    for (const mailbox of this.#mailboxes) mailbox.fail(error);
    this.close();
  }

  /** Terminates every worker. */
  close(): void {
    this.#watchdog.stop();
    for (const mailbox of this.#mailboxes) mailbox.close();
  }

  /** The step timeout now: the user's, or adaptive (see `TrainOptions.stepTimeout`). */
  #stepLimitMs(): number {
    if (this.#stepTimeout !== undefined) return this.#stepTimeout * 1000;
    if (this.#stepsDone === 0) return 30 * 60_000;
    return Math.max(5 * 60_000, 20 * this.#slowestStepMs);
  }

  /** No progress for too long: blame the workers the others wait for, and stop. */
  #onStall(idleMs: number): void {
    const ranks = this.#workers.map((_, rank) => rank);
    let laggards: number[] = [];
    if (this.#allReduceBuffer) {
      const rounds = sharedAllReduceRounds(this.#allReduceBuffer, { worldSize: ranks.length });
      laggards = ranks.filter((rank) => rounds[rank] < Math.max(...rounds));
    } else if (this.#hub) {
      laggards = this.#hub.missing();
    }
    if (laggards.length === 0 || laggards.length === ranks.length) laggards = ranks;
    const waiting = ranks.filter((rank) => !laggards.includes(rank));
    const others = waiting.length > 0 ? `; worker(s) ${waiting.join(", ")} waited for it` : "";
    const rank = laggards[0];
    const who = laggards.length > 1 ? ` (and worker(s) ${laggards.slice(1).join(", ")})` : "";
    this.fail(
      new WorkerError(
        rank,
        `no progress for ${Math.round(idleMs / 1000)} s, over the step timeout of ` +
          `${Math.round(this.#stepLimitMs() / 1000)} s${who}${others}`,
      ),
    );
  }

  #onStep(message: StepMessage): void {
    const progress = this.#progress;
    if (progress === null || message.epoch !== progress.epoch - 1) {
      throw new Error(`worker ${message.rank} reported a step of an unexpected epoch`);
    }
    progress.lossSum += message.lossSum;
    progress.correct += message.correct;
    progress.count += message.count;
    if (message.timing) {
      (progress.timings[message.step] ??= [])[message.rank] = message.timing;
    }
    this.#watchdog.touch();
    const done = ++progress.reported[message.step];
    if (done < this.#workers.length) return;
    const now = performance.now();
    if (this.#stepsDone > 0) {
      this.#slowestStepMs = Math.max(this.#slowestStepMs, now - this.#lastStepAt);
    }
    this.#stepsDone++;
    this.#lastStepAt = now;
    const timings = progress.timings[message.step];
    delete progress.timings[message.step];
    const seconds = (performance.now() - progress.startedAt) / 1000;
    if (message.step === progress.steps - 1) progress.trainSeconds = seconds;
    progress.onStep?.({
      epoch: progress.epoch,
      step: message.step + 1,
      steps: progress.steps,
      loss: progress.lossSum / progress.count,
      trainAcc: progress.correct / progress.count,
      seconds,
      timings,
    });
  }
}

/**
 * llvmpipe (Mesa's software WebGPU) starts one render thread per CPU core in
 * every worker; with several workers that oversubscribes the CPU. Unless the
 * user chose `LP_NUM_THREADS`, give each worker an equal share of the cores
 * while the workers create their devices. Returns the value the workers see
 * (undefined: llvmpipe's default) and a function that restores the
 * environment.
 */
function shareCoresAmongWorkers(workers: number): { threads?: string; restore(): void } {
  try {
    const chosen = Deno.env.get("LP_NUM_THREADS");
    if (chosen !== undefined) return { threads: chosen, restore: () => {} };
    const share = String(Math.max(1, Math.floor(navigator.hardwareConcurrency / workers)));
    Deno.env.set("LP_NUM_THREADS", share);
    return { threads: share, restore: () => Deno.env.delete("LP_NUM_THREADS") };
  } catch {
    return { restore: () => {} }; // without --allow-env, llvmpipe's default
  }
}
