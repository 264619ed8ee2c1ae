/**
 * What a worker does: build a replica, then follow the coordinator's commands
 * (see protocol.ts). One training step, on every worker at once:
 *
 * 1. take this rank's shard of the global batch (`batchShard`) — or its
 *    shards, one after the other, when a batch has more shards than replicas,
 * 2. copy those examples out of the shared data set (`gatherBatch`),
 * 3. forward and backward pass on the device, read the gradient back
 *    (`Replica.computeGradients`),
 * 4. average the gradients of all shards, weighted by their example counts
 *    (`AllReduce.average`),
 * 5. apply the same optimizer update on every rank, at the learning rate
 *    the schedule gives this step (`Replica.applyGradients`) — or, with the
 *    optimizer sharded (ZeRO stage 1), let each rank update its chunk of the
 *    weights between the reduce-scatter and the all-gather
 *    (`ShardedAllReduce.averageAndUpdate`, `Replica.updateChunk`), which
 *    then brings every rank the updated weights (`Replica.setUpdated`).
 *
 * @module
 */

import type { Channel } from "../../collective/channel.ts";
import { Mailbox } from "../../collective/mailbox.ts";
import { type AllReduce, canShard, type ShardedAllReduce } from "../../collective/all_reduce.ts";
import { COLLECTIVES } from "../../collective/registry.ts";
import { batchShard, gatherBatch } from "../../data/batches.ts";
import type { Dataset } from "../../data/dataset.ts";
import { DistributedSampler } from "../../data/sampler.ts";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { DivergedError, UsageError } from "../../errors.ts";
import { buildModel } from "../../model/registry.ts";
import { learningRateAt, type OptimizerState } from "../../optim/mod.ts";
import { mixSeed } from "../../util/random.ts";
import { trace } from "../../util/trace.ts";
import { initBackend } from "../shared/backend.ts";
import type {
  CheckpointMessage,
  EpochEndMessage,
  EpochMessage,
  ErrorMessage,
  EvalProgressMessage,
  GetWeightsMessage,
  GrantMessage,
  InitMessage,
  PhaseMessage,
  ReadyMessage,
  StartMessage,
  StepMessage,
  StepTiming,
  WeightsMessage,
} from "../shared/protocol.ts";
import { firstNonFinite, type LocalGradients, Replica } from "./replica.ts";
import { StepTracer } from "./step_trace.ts";
import { weightsChecksum } from "../../util/sha256.ts";

/** One rank's part of a step: its shards' gradients and their totals. */
interface ShardGradients {
  /** One gradient per shard, back to back. */
  gradients: Float32Array<ArrayBuffer>;
  /** Each shard's number of examples: its weight in the average. */
  counts: number[];
  /** Sum of the per-example losses over the shards. */
  lossSum: number;
  /** Correct arg-max predictions over the shards. */
  correct: number;
  /** Examples over the shards. */
  count: number;
  /** Milliseconds spent reading gradients back (with `profile`). */
  readbackMs: number;
}

/**
 * Runs one replica worker over `channel` until the coordinator closes it.
 * Any failure is reported to the coordinator as an `error` message.
 *
 * @example The whole of a worker entry point
 * ```ts ignore
 * import { parentChannel } from "../../collective/worker_thread.ts";
 * import { serveReplica } from "./replica_service.ts";
 *
 * await serveReplica(parentChannel());
 * ```
 */
export async function serveReplica(channel: Channel): Promise<void> {
  const mailbox = new Mailbox(channel);
  const report = (error: unknown) => {
    if (mailbox.error) return; // the coordinator closed the channel
    const message: ErrorMessage = {
      type: "error",
      message: error instanceof Error ? error.message : String(error),
      model: error instanceof ModelError || undefined,
      diverged: error instanceof DivergedError
        ? { epoch: error.epoch, step: error.step, what: error.what }
        : undefined,
    };
    mailbox.send(message);
  };
  try {
    const init = await mailbox.receive<InitMessage>("init");
    const worker = await ReplicaWorker.create(mailbox, init);
    mailbox.handle<GrantMessage>("grant", (message) => worker.grant(message.upTo));
    mailbox.handle<GetWeightsMessage>("getWeights", () => worker.sendWeights().catch(report));
    for (;;) await worker.runEpoch(await mailbox.receive<EpochMessage>("epoch"));
  } catch (error) {
    report(error);
  }
}

/** The model cannot be built as configured: the user's to fix, not a worker to restart. */
class ModelError extends Error {}

class ReplicaWorker {
  readonly #mailbox: Mailbox;
  readonly #init: InitMessage;
  readonly #replica: Replica;
  readonly #allReduce: AllReduce;
  /** The all-reduce again when the optimizer is sharded through it. */
  readonly #sharded: ShardedAllReduce | undefined;
  /** This rank's shards of every batch (`shardsPerReplica` consecutive indices) and their samplers. */
  readonly #shards: { index: number; sampler: DistributedSampler }[];
  #granted = 0;
  #grantArrived: (() => void) | null = null;
  /** With `trace`, until the traced steps are sent. */
  #tracer: StepTracer | undefined;

  private constructor(
    mailbox: Mailbox,
    init: InitMessage,
    replica: Replica,
    allReduce: AllReduce,
  ) {
    this.#mailbox = mailbox;
    this.#init = init;
    this.#replica = replica;
    this.#allReduce = allReduce;
    if (init.config.shardOptimizer && !canShard(allReduce)) {
      throw new Error(`the ${init.config.allReduce} all-reduce cannot shard the optimizer`);
    }
    this.#sharded = init.config.shardOptimizer ? allReduce as ShardedAllReduce : undefined;
    if (this.#sharded) replica.shardOptimizer(this.#sharded.chunk);
    const { batchShards, shardsPerReplica } = init.config;
    this.#shards = Array.from({ length: shardsPerReplica }, (_, j) => {
      const index = init.rank * shardsPerReplica + j;
      const sampler = new DistributedSampler(init.train.count, {
        rank: index,
        worldSize: batchShards,
        seed: init.config.seed,
      });
      return { index, sampler };
    });
  }

  static async create(mailbox: Mailbox, init: InitMessage): Promise<ReplicaWorker> {
    const who = `worker ${init.rank}`;
    const phase = (text: string) => {
      const message: PhaseMessage = { type: "phase", rank: init.localRank, phase: text };
      mailbox.send(message);
    };
    trace(who, `initialising the ${init.config.backend} backend`);
    phase(`creating its ${init.config.backend} device`);
    const device = await initBackend(init.config.backend, { kernels: init.config.kernels });
    trace(who, `backend ready on ${device.adapter}; building the model`);
    const model = init.config.model;
    phase(
      `building the model (${
        model.name === "custom" ? `${model.export} of ${model.module}` : model.name
      })`,
    );
    const built = await buildModel(model).catch((error) => {
      throw error instanceof UsageError ? new ModelError(error.message) : error;
    });
    const replica = new Replica({
      model: built,
      optimizer: init.config.optimizer,
      normalize: init.config.normalize,
      bf16Gradients: init.config.wire === "bf16",
    });
    const ready: ReadyMessage = {
      type: "ready",
      rank: init.localRank,
      device,
      numWeights: replica.numWeights,
      numParams: replica.numParams,
      numReduced: replica.numReduced,
      inputShape: replica.inputShape,
      numClasses: replica.numClasses,
    };
    // Rank 0's initial weights are broadcast, as DDP does at construction.
    const weights = init.localRank === 0 ? await replica.getWeights() : undefined;
    mailbox.send(weights ? { ...ready, weights } : ready, weights ? [weights.buffer] : []);
    const start = await mailbox.receive<StartMessage>("start");
    if (start.weights) replica.setWeights(start.weights);
    const allReduce = COLLECTIVES[init.config.allReduce].join({
      rank: init.localRank,
      worldSize: init.config.localWorkers,
      length: replica.numReduced,
      parts: init.config.shardsPerReplica,
      joinInfo: start.collective,
      mailbox,
    });
    const worker = new ReplicaWorker(mailbox, init, replica, allReduce);
    if (init.config.trace) {
      worker.#tracer = new StepTracer({
        rank: init.rank,
        backend: device.backend,
        adapter: device.adapter,
      });
    }
    if (start.optimizer) replica.loadOptimizerState(start.optimizer); // after sharding: cut to fit
    await replica.loadHostWeights();
    return worker;
  }

  /** Allows the steps of the current epoch below `upTo`. */
  grant(upTo: number): void {
    this.#granted = Math.max(this.#granted, upTo);
    this.#grantArrived?.();
    this.#grantArrived = null;
  }

  /** Runs the steps of one epoch from `fromStep`, as they are granted, then evaluates. */
  async runEpoch(command: EpochMessage): Promise<void> {
    const { epoch, fromStep, snapshotAfter } = command;
    // The sampler's shuffle and the dropout seeds count epochs from 0, as DistributedSampler does.
    const epochIndex = epoch - 1;
    const { localRank, config } = this.#init;
    const shards = this.#shards.map(({ index, sampler }) => {
      sampler.setEpoch(epochIndex);
      return { index, indices: sampler.indices() };
    });
    const steps = config.stepsPerEpoch;
    this.#granted = command.grantUpTo;
    // Traced: the steps after the first (which compiles the shaders), if the epoch has them.
    const traceFrom = fromStep + (steps - fromStep > 1 ? 1 : 0);
    const tracer = this.#tracer;
    for (let step = fromStep; step < steps; step++) {
      while (step >= this.#granted) {
        await new Promise<void>((resolve) => this.#grantArrived = resolve);
      }
      const traced = tracer !== undefined && step >= traceFrom &&
        tracer.traced < (config.trace?.steps ?? 0);
      this.#replica.recorder = traced ? tracer.phase : undefined;
      if (traced) tracer.startStep();
      const started = performance.now();
      const local = await this.#shardGradients(shards, { epochIndex, step });
      const lr = learningRateAt(config.schedule, {
        lr: config.lr,
        step: epochIndex * steps + step,
        stepsPerEpoch: steps,
        totalSteps: config.epochs * steps,
      });
      const reduceStarted = performance.now();
      const { updateStarted, chunkUpdateMs } = await this.#averageAndUpdate(local, {
        epoch,
        step,
        lr,
      });
      if (traced) {
        const { waitMs, reduceMs } = this.#allReduce.lastTiming;
        tracer.phase("all-reduce", reduceStarted, updateStarted, {
          waitMs,
          reduceMs,
          chunkUpdateMs,
        });
        await tracer.endStep(`epoch ${epoch}, step ${step + 1}`);
        this.#replica.recorder = undefined;
      }
      let timing: StepTiming | undefined;
      if (config.profile) {
        await this.#replica.sync();
        const { waitMs } = this.#allReduce.lastTiming;
        timing = {
          computeMs: reduceStarted - started - local.readbackMs, // gathering included
          readbackMs: local.readbackMs,
          allReduceMs: updateStarted - reduceStarted - waitMs - chunkUpdateMs,
          waitMs,
          optimizerMs: performance.now() - updateStarted + chunkUpdateMs,
          tensors: tf.memory().numTensors,
        };
      }
      const message: StepMessage = {
        type: "step",
        rank: localRank,
        epoch,
        step,
        lossSum: local.lossSum,
        correct: local.correct,
        count: local.count,
        timing,
      };
      this.#mailbox.send(message);
      const stepsDone = step + 1;
      if (snapshotAfter.includes(stepsDone)) {
        const optimizer = await this.#optimizerState(); // every rank takes part when sharded
        if (optimizer !== undefined) {
          const weights = await this.#replica.getWeights();
          const checkpoint: CheckpointMessage = {
            type: "checkpoint",
            epoch,
            stepsDone,
            weights,
            checksum: await weightsChecksum(weights),
            optimizer,
          };
          this.#mailbox.send(checkpoint, transferables(weights, optimizer));
        }
      }
    }
    if (tracer !== undefined) {
      this.#mailbox.send(tracer.message()); // the first epoch's traced steps, however many
      this.#tracer = undefined;
    }
    const test = await this.#evaluate(this.#init.test);
    const weights = await this.#replica.getWeights();
    const optimizer = await this.#optimizerState();
    const end: EpochEndMessage = {
      type: "epochEnd",
      rank: localRank,
      epoch,
      testCorrect: test.correct,
      testCount: test.count,
      checksum: await weightsChecksum(weights),
      weights: optimizer ? weights : undefined,
      optimizer,
    };
    this.#mailbox.send(end, optimizer ? transferables(weights, optimizer) : []);
  }

  /**
   * Step 4 and 5 of one step: the all-reduce and the update, sharded or not.
   * Nothing non-finite is applied: every replica checks the same averaged
   * gradient (sharded: each its chunk, declining to update it, and every rank
   * learns which chunks were declined). Returns when the update began, and
   * the milliseconds this rank's sharded update took inside the all-reduce.
   */
  async #averageAndUpdate(
    local: ShardGradients,
    at: { epoch: number; step: number; lr: number },
  ): Promise<{ updateStarted: number; chunkUpdateMs: number }> {
    const diverged = (what: string) =>
      new DivergedError({ epoch: at.epoch, step: at.step + 1, what });
    const badLoss = !Number.isFinite(local.lossSum)
      ? `the loss is ${local.lossSum / local.count} on worker ${this.#init.rank}`
      : undefined;
    const sharded = this.#sharded;
    if (sharded === undefined) {
      const average = await this.#allReduce.average(local.gradients, local.counts);
      const index = firstNonFinite(average);
      const what = badLoss ?? (index < 0 ? undefined : holds(average, index));
      if (what !== undefined) throw diverged(what);
      const updateStarted = performance.now();
      await this.#replica.applyGradients(average, { lr: at.lr });
      return { updateStarted, chunkUpdateMs: 0 };
    }
    let chunkUpdateMs = 0;
    const { vector, declined } = await sharded.averageAndUpdate(
      local.gradients,
      local.counts,
      (chunk) => {
        const started = performance.now();
        const applied = badLoss === undefined && this.#replica.updateChunk(chunk, { lr: at.lr });
        chunkUpdateMs = performance.now() - started;
        return applied;
      },
    );
    if (badLoss !== undefined) throw diverged(badLoss);
    if (declined.length > 0) {
      const { start, end } = declined[0];
      const index = start + firstNonFinite(vector.subarray(start, end));
      // A chunk declined for another rank's loss is finite: that rank reports its loss.
      throw diverged(index < start ? "a worker's loss is not finite" : holds(vector, index));
    }
    const updateStarted = performance.now();
    this.#replica.setUpdated(vector);
    return { updateStarted, chunkUpdateMs };
  }

  /**
   * The optimizer's whole state on rank 0, undefined on the others; when
   * sharded, every rank must call it at the same point (a collective).
   */
  async #optimizerState(): Promise<OptimizerState | undefined> {
    const leader = this.#init.localRank === 0;
    const sharded = this.#sharded;
    if (sharded === undefined) return leader ? this.#replica.optimizerState() : undefined;
    const { step, slots } = this.#replica.optimizerState();
    const gathered: Record<string, Float32Array<ArrayBuffer>> = {};
    for (const name of Object.keys(slots).sort()) {
      const whole = await sharded.gather(slots[name], this.#replica.numParams);
      if (whole) gathered[name] = whole;
    }
    return leader ? { step, slots: gathered } : undefined;
  }

  /**
   * The gradients of this rank's shards of global batch `step`, one forward
   * and backward pass each (one vector per shard, back to back, and each
   * shard's example count), with their loss, correct and example totals.
   */
  async #shardGradients(
    shards: readonly { index: number; indices: readonly number[] }[],
    at: { epochIndex: number; step: number },
  ): Promise<ShardGradients> {
    const { config, train } = this.#init;
    const { epochIndex, step } = at;
    const results: LocalGradients[] = [];
    for (const shard of shards) {
      const shardOptions = {
        rank: shard.index,
        worldSize: config.batchShards,
        batchSize: config.batchSize,
      };
      const gathering = performance.now();
      const batch = gatherBatch(train, batchShard(shard.indices, step, shardOptions));
      this.#replica.recorder?.("gather", gathering, performance.now());
      results.push(
        await this.#replica.computeGradients(batch, {
          dropoutSeed: mixSeed([config.seed, epochIndex, step, shard.index]),
          profile: config.profile,
        }),
      );
    }
    const n = this.#replica.numReduced;
    let gradients = results[0].gradients;
    if (results.length > 1) {
      gradients = new Float32Array(results.length * n);
      results.forEach((r, j) => gradients.set(r.gradients, j * n));
    }
    const total = (pick: (r: LocalGradients) => number) =>
      results.reduce((sum, r) => sum + pick(r), 0);
    return {
      gradients,
      counts: results.map((r) => r.count),
      lossSum: total((r) => r.lossSum),
      correct: total((r) => r.correct),
      count: total((r) => r.count),
      readbackMs: total((r) => r.timing?.readbackMs ?? 0),
    };
  }

  /** Sends rank 0's weights and optimizer state; with the optimizer sharded every rank is asked. */
  async sendWeights(): Promise<void> {
    const optimizer = await this.#optimizerState();
    if (optimizer === undefined) return;
    const weights = await this.#replica.getWeights();
    const message: WeightsMessage = {
      type: "weights",
      weights,
      checksum: await weightsChecksum(weights),
      optimizer,
    };
    this.#mailbox.send(message, transferables(weights, optimizer));
  }

  /** Accuracy counts on this rank's slice (every `worldSize`-th example) of `dataset`. */
  async #evaluate(dataset: Dataset): Promise<{ correct: number; count: number }> {
    const { rank, worldSize, localRank, config } = this.#init;
    const indices: number[] = [];
    for (let i = rank; i < dataset.count; i += worldSize) indices.push(i);
    let correct = 0;
    for (let start = 0; start < indices.length; start += config.evalBatchSize) {
      const chunk = indices.slice(start, start + config.evalBatchSize);
      correct += await this.#replica.countCorrect(gatherBatch(dataset, chunk));
      const message: EvalProgressMessage = {
        type: "evalProgress",
        rank: localRank,
        done: Math.min(start + config.evalBatchSize, indices.length),
      };
      this.#mailbox.send(message);
    }
    return { correct, count: indices.length };
  }
}

/** The buffers of a weight vector and an optimizer state (fresh copies), moved, not copied. */
function transferables(weights: Float32Array, optimizer: OptimizerState): ArrayBuffer[] {
  return [weights.buffer as ArrayBuffer, ...Object.values(optimizer.slots).map((s) => s.buffer)];
}

/** What a divergence reports: the first non-finite element of the average. */
function holds(average: Float32Array, index: number): string {
  return `the averaged gradient holds ${average[index]} (element ${index})`;
}
