/**
 * The coordinator's side of an elastic run (`serve.elastic`): members come
 * and go while it trains — worker threads of its own, other Deno processes
 * (`--join`), browser tabs — and none of that changes the result.
 *
 * One step, as this file runs it:
 *
 * 1. cut the global batch into its `batchShards` shards, as a fixed
 *    `--shards N` run does (the same samplers, the same dropout seeds);
 * 2. hand the shards out one at a time to whichever member is idle (a faster
 *    member comes back sooner and so takes more: the shares follow measured
 *    speed); when none is left to hand out, an idle member also takes a shard
 *    another member still holds if it is expected to finish it sooner (by
 *    each one's recent time per shard), and the first result counts;
 * 3. when every shard's result is in, average them in shard order with the
 *    function every all-reduce uses (`weightedAverage`), and apply the
 *    optimizer here, on this thread's copy of the weights — the same code
 *    and the same bits as every replica of a fixed run;
 * 4. send the new weights to each member before its next piece of work.
 *
 * With `verify`, a share of the results that members from outside this
 * process send is recomputed by a member of this process before it counts,
 * and compared (see {@linkcode ElasticPlan.verify}).
 *
 * So the weights depend on the shards, never on who computed them: with
 * members of one kind of device they equal a fixed `--shards N` run's bit
 * for bit, whoever joined or left when. A member that leaves, fails, sends
 * something malformed or non-finite, or holds a shard past its deadline is
 * dropped at once with one line naming it, and its shard goes to another.
 * Members of this process are trusted: their failure fails the run, as in
 * a fixed run.
 *
 * @module
 */

import type { Channel } from "../../collective/channel.ts";
import { Mailbox } from "../../collective/mailbox.ts";
import { weightedAverage } from "../../collective/all_reduce.ts";
import { WorkerThread } from "../../collective/worker_thread.ts";
import { batchShard, gatherBatch } from "../../data/batches.ts";
import { checkDataFitsModel, type Dataset } from "../../data/dataset.ts";
import { DistributedSampler } from "../../data/sampler.ts";
import {
  DataError,
  DivergedError,
  ReplicaDivergenceError,
  UsageError,
  WorkerError,
} from "../../errors.ts";
import {
  createOptimizer,
  learningRateAt,
  type LrSchedule,
  type Optimizer,
  type OptimizerConfig,
  type OptimizerState,
} from "../../optim/mod.ts";
import { roundToBf16 } from "../../util/bf16.ts";
import { mixSeed } from "../../util/random.ts";
import { weightsChecksum } from "../../util/sha256.ts";
import { ThreadWatch } from "../../util/thread_watch.ts";
import type { DeviceInfo } from "../shared/backend.ts";
import type { EpochSums } from "../shared/checkpoint.ts";
import type {
  ChecksumMessage,
  EvalResultMessage,
  EvalWorkMessage,
  MemberConfig,
  MemberErrorMessage,
  MemberEvent,
  MemberInitMessage,
  MemberReadyMessage,
  MemberWeightsMessage,
  ResultMessage,
  WorkMessage,
} from "../shared/member_protocol.ts";
import { shareCoresAmongWorkers } from "./webgpu_path.ts";
import type { EpochOutcome, EpochPlan } from "./worker_group.ts";

/** What an elastic group is started with. */
export interface ElasticPlan {
  /** What every member builds. */
  member: MemberConfig;
  /** Member threads in this process (at least 1: they build the first weights). */
  localWorkers: number;
  /** Members needed to compute; below it the run pauses. */
  minMembers: number;
  /** Shards per global batch: the unit of work. */
  batchShards: number;
  /** Global batch size. */
  batchSize: number;
  /** Steps per epoch. */
  stepsPerEpoch: number;
  /** Epochs in the run (the schedule spans them). */
  epochs: number;
  /** Seed of the samplers and the dropout masks. */
  seed: number;
  /** Base learning rate, optimizer and schedule. */
  lr: number;
  optimizer: OptimizerConfig;
  schedule: LrSchedule;
  /** Test examples per evaluation batch. */
  evalBatchSize: number;
  /** Seconds a member may hold a shard (undefined: adaptive, see `#deadlineMs`). */
  stepTimeout: number | undefined;
  /** Seconds to build a member, and to finish its first shard. */
  startupTimeout: number;
  /** Steps between checkpoints within an epoch (0: only after each epoch). */
  checkpointEvery: number;
  /**
   * Checks of members from outside this process: `fraction` (0 to 1) of the
   * results they send first is recomputed by a member of this process, and
   * a result that comes after one of this process's is compared with it for
   * free. A member whose result differs is dropped: on the same kind of
   * device any difference; on another, a relative difference (L2 norm of
   * the difference over the trusted result's) beyond `tolerance`.
   */
  verify: { fraction: number; tolerance: number };
}

/** A member as the dashboard lists it. */
export interface MemberView {
  name: string;
  device: string;
  /** Shards it computed this run. */
  shards: number;
  /** Of those, the shards whose result counted (it came before another member's). */
  counted: number;
  /** Its share of the last step's shards, 0 to 1. */
  share: number;
  /** Its recent milliseconds per shard (0: none yet). */
  msPerShard: number;
  /** Its results compared with this process's (`verify`). */
  verified: number;
}

/** One piece of work: a shard of the step, or a test batch. */
interface Task {
  id: number;
  message: WorkMessage | EvalWorkMessage;
  /** Members computing it, and since when. */
  holders: Map<Member, number>;
  result: ResultMessage | EvalResultMessage | undefined;
  /** Who sent `result`. */
  by: Member | undefined;
  /** A member's result held until one of this process's members recomputes it (`verify`). */
  check: { member: Member; result: ResultMessage | EvalResultMessage } | undefined;
}

/** The work of one step (or one evaluation) being handed out. */
interface Round {
  tasks: Task[];
  pending: Task[];
  /** Tasks whose result waits for a recomputation here (`verify`): for this process's members. */
  recompute: Task[];
  remaining: number;
  done: PromiseWithResolvers<void>;
}

class Member {
  readonly id: number;
  readonly name: string;
  readonly local: boolean;
  readonly mailbox: Mailbox;
  readonly #channel: Channel;
  device: DeviceInfo | undefined;
  ready = false;
  gone = false;
  version = -1;
  task: Task | undefined;
  since = 0;
  shards = 0;
  /** Shards whose result counted (it came first). */
  counted = 0;
  stepShards = 0;
  /** Exponential average of its milliseconds per shard; undefined before its first. */
  msPerShard: number | undefined;
  /** Results compared with this process's. */
  verified = 0;

  constructor(id: number, name: string, local: boolean, channel: Channel) {
    this.id = id;
    this.name = name;
    this.local = local;
    this.mailbox = new Mailbox(channel);
    this.#channel = channel;
  }

  /** Ends the link, telling a member outside this process `reason`. */
  close(reason: string): void {
    (this.#channel as { close(reason?: string): void }).close(reason);
    this.mailbox.close();
  }
}

/** Milliseconds between deadline checks. */
const TICK_MS = 200;

/** Members, the weights and the optimizer of an elastic run. */
export class ElasticGroup {
  /** The device of the first member of this process. */
  readonly device: DeviceInfo;
  /** Trainable weights. */
  readonly numParams: number;
  /** The model's input: `[height, width, channels]`. */
  readonly inputShape: readonly [number, number, number];
  /** `LP_NUM_THREADS` as the member threads saw it. */
  readonly rendererThreads: string | undefined;
  /** The largest frame a member may send: a result, with room for its fields. */
  get maxFrameBytes(): number {
    return this.#ready.numReduced * 4 + 65536;
  }
  /** One process: stops come through `halt` alone. */
  readonly stopAgreed = false;
  readonly #plan: ElasticPlan;
  readonly #train: Dataset;
  readonly #test: Dataset;
  readonly #ready: MemberReadyMessage;
  readonly #weights: Float32Array<ArrayBuffer>;
  readonly #optimizer: Optimizer;
  readonly #members: Member[] = [];
  readonly #threads: ThreadWatch;
  readonly #onMember: (event: MemberEvent) => void;
  readonly #onChange: (members: MemberView[]) => void;
  #version = 0;
  #nextId = 0;
  #nextTask = 0;
  #round: Round | null = null;
  #failure: Error | null = null;
  readonly #failed = Promise.withResolvers<never>();
  #memberArrived: (() => void) | null = null;
  #ticker: ReturnType<typeof setInterval> | undefined;
  #closed: Promise<void> | null = null;

  private constructor(parts: {
    plan: ElasticPlan;
    train: Dataset;
    test: Dataset;
    ready: MemberReadyMessage;
    weights: Float32Array<ArrayBuffer>;
    optimizer: Optimizer;
    threads: ThreadWatch;
    rendererThreads: string | undefined;
    onMember: (event: MemberEvent) => void;
    onChange: (members: MemberView[]) => void;
  }) {
    this.#plan = parts.plan;
    this.#train = parts.train;
    this.#test = parts.test;
    this.#ready = parts.ready;
    this.#weights = parts.weights;
    this.#optimizer = parts.optimizer;
    this.#threads = parts.threads;
    this.#onMember = parts.onMember;
    this.#onChange = parts.onChange;
    this.device = parts.ready.device;
    this.numParams = parts.ready.numParams;
    this.inputShape = parts.ready.inputShape;
    this.rendererThreads = parts.rendererThreads;
    this.#failed.promise.catch(() => {});
  }

  /**
   * Starts this process's member threads and waits until they are built;
   * the weights start as `startWeights` (a checkpoint's, with its optimizer
   * state), or as the first member's.
   */
  static async start(plan: ElasticPlan, setup: {
    train: Dataset;
    test: Dataset;
    workerUrl: URL | string;
    startWeights?: Float32Array<ArrayBuffer>;
    startOptimizer?: OptimizerState;
    stop?: { signal: AbortSignal; error: () => Error };
    onMember?: (event: MemberEvent) => void;
    /** Told whenever the members or their shares change (for the dashboard). */
    onChange?: (members: MemberView[]) => void;
  }): Promise<ElasticGroup> {
    if (plan.localWorkers < 1) throw new UsageError("an elastic run needs at least 1 worker");
    const cores = shareCoresAmongWorkers(plan.localWorkers);
    const threads = new ThreadWatch();
    const locals: Member[] = [];
    for (let rank = 0; rank < plan.localWorkers; rank++) {
      const thread = new WorkerThread(setup.workerUrl, {
        name: `member-${rank}`,
        label: `coordinator↔worker ${rank}`,
      });
      threads.add(thread);
      locals.push(new Member(rank, `worker ${rank}`, true, thread));
    }
    const stopped = Promise.withResolvers<never>();
    stopped.promise.catch(() => {});
    const onStop = () => stopped.reject(setup.stop!.error());
    setup.stop?.signal.addEventListener("abort", onStop, { once: true });
    if (setup.stop?.signal.aborted) onStop();
    const timeout = setTimeout(
      () =>
        stopped.reject(
          new WorkerError(
            locals.findIndex((m) => !m.ready),
            `not ready within the start-up timeout of ${plan.startupTimeout} s`,
          ),
        ),
      plan.startupTimeout * 1000,
    );
    try {
      const readies = await Promise.race([
        Promise.all(locals.map(async (member, rank) => {
          const init: MemberInitMessage = {
            type: "memberInit",
            config: plan.member,
            sendWeights: rank === 0 && setup.startWeights === undefined,
          };
          member.mailbox.send(init);
          const ready = await member.mailbox.receive<MemberReadyMessage | MemberErrorMessage>([
            "memberReady",
            "error",
          ]);
          if (ready.type === "error") {
            throw ready.model
              ? new UsageError(ready.message)
              : new WorkerError(rank, ready.message);
          }
          member.ready = true;
          member.device = ready.device;
          return ready;
        })),
        stopped.promise,
      ]);
      const first = readies[0];
      checkDataFitsModel(setup, first);
      const weights = setup.startWeights ?? first.weights!;
      if (weights.length !== first.numWeights) {
        throw new DataError(
          `the checkpoint holds ${weights.length} weights but this model has ${first.numWeights}`,
        );
      }
      const optimizer = createOptimizer(plan.optimizer, { size: first.numParams });
      if (setup.startOptimizer) {
        try {
          optimizer.loadState(setup.startOptimizer);
        } catch (error) {
          throw new DataError(`the checkpoint's optimizer state: ${(error as Error).message}`);
        }
      }
      const group = new ElasticGroup({
        plan,
        train: setup.train,
        test: setup.test,
        ready: first,
        weights: Float32Array.from(weights),
        optimizer,
        threads,
        rendererThreads: cores.threads,
        onMember: setup.onMember ?? (() => {}),
        onChange: setup.onChange ?? (() => {}),
      });
      for (const member of locals) group.#adopt(member);
      group.#ticker = setInterval(() => group.#checkDeadlines(), TICK_MS);
      Deno.unrefTimer(group.#ticker);
      return group;
    } catch (error) {
      threads.mark();
      locals.forEach((m) => m.close("the run failed to start"));
      await threads.exited();
      throw error;
    } finally {
      clearTimeout(timeout);
      cores.restore();
      setup.stop?.signal.removeEventListener("abort", onStop);
    }
  }

  /**
   * Takes a member that connected from outside this process (`channel`, e.g.
   * a WebSocket that proved the token): it builds its replica, then shares
   * the work from the next piece handed out. `where` names it in lines.
   */
  join(channel: Channel, where: string): void {
    if (this.#failure || this.#closed) return channel.close();
    const id = this.#plan.localWorkers + this.#nextId++;
    const member = new Member(id, `member ${id} (${where})`, false, channel);
    this.#members.push(member);
    void this.#build(member);
  }

  /** The members now, for the dashboard. */
  members(): MemberView[] {
    const live = this.#members.filter((m) => m.ready && !m.gone);
    const step = live.reduce((sum, m) => sum + m.stepShards, 0);
    return live.map((m) => ({
      name: m.name,
      device: m.device ? `${m.device.backend}: ${m.device.adapter}` : "",
      shards: m.shards,
      counted: m.counted,
      share: step > 0 ? m.stepShards / step : 0,
      msPerShard: Math.round(m.msPerShard ?? 0),
      verified: m.verified,
    }));
  }

  /**
   * Runs epoch `epoch` (from 1) from `plan.fromStep`; once `plan.halt` is
   * aborted, stops at the next step boundary with the weights there.
   */
  async runEpoch(epoch: number, plan: EpochPlan): Promise<EpochOutcome> {
    const startedAt = performance.now();
    const config = this.#plan;
    const epochIndex = epoch - 1; // samplers and dropout seeds count epochs from 0
    const shards = Array.from({ length: config.batchShards }, (_, index) => {
      const sampler = new DistributedSampler(this.#train.count, {
        rank: index,
        worldSize: config.batchShards,
        seed: config.seed,
      });
      sampler.setEpoch(epochIndex);
      return { index, indices: sampler.indices() };
    });
    const sums: EpochSums = { ...plan.base };
    const sumsNow = (): EpochSums => ({
      ...sums,
      seconds: plan.base.seconds + (performance.now() - startedAt) / 1000,
    });
    const snapshotAt = (stepsDone: number) => this.#snapshot(stepsDone, sumsNow());
    for (let step = plan.fromStep; step < plan.steps; step++) {
      if (plan.halt?.aborted) return { halted: true, ...(await snapshotAt(step)) };
      if (!(await this.#enoughMembers(plan.halt))) {
        return { halted: true, ...(await snapshotAt(step)) };
      }
      const tasks = shards.map(({ index, indices }) => {
        const examples = batchShard(indices, step, {
          rank: index,
          worldSize: config.batchShards,
          batchSize: config.batchSize,
        });
        const message: WorkMessage = {
          type: "work",
          id: 0,
          version: this.#version,
          batch: gatherBatch(this.#train, examples),
          dropoutSeed: mixSeed([config.seed, epochIndex, step, index]),
        };
        return message;
      });
      const results = await this.#compute(tasks) as ResultMessage[];
      for (const result of results) {
        sums.lossSum += result.lossSum;
        sums.correct += result.correct;
        sums.count += result.count;
      }
      const lr = learningRateAt(config.schedule, {
        lr: config.lr,
        step: epochIndex * plan.steps + step,
        stepsPerEpoch: plan.steps,
        totalSteps: config.epochs * plan.steps,
      });
      this.#update(results, { epoch, step, lr });
      sums.trainSeconds = plan.base.trainSeconds + (performance.now() - startedAt) / 1000;
      plan.onStep?.({
        epoch,
        step: step + 1,
        steps: plan.steps,
        loss: sums.lossSum / sums.count,
        trainAcc: sums.correct / sums.count,
        seconds: sumsNow().seconds,
      });
      const every = config.checkpointEvery;
      if (every > 0 && (step + 1) % every === 0 && step + 1 < plan.steps && plan.onSnapshot) {
        await plan.onSnapshot(await snapshotAt(step + 1));
      }
    }
    const testCorrect = await this.#evaluate(epoch, plan);
    await this.#compareChecksums(epoch);
    const final = sumsNow();
    return {
      halted: false,
      sums: final,
      weights: this.#weights.slice(),
      checksum: await weightsChecksum(this.#weights),
      optimizer: this.#optimizer.state(),
      record: {
        epoch,
        loss: final.lossSum / final.count,
        trainAcc: final.correct / final.count,
        testAcc: testCorrect / this.#test.count,
        examplesPerSec: final.count / final.trainSeconds,
        seconds: final.seconds,
      },
    };
  }

  /** Stops every member; pending work rejects with `error`. */
  fail(error: Error): void {
    if (this.#failure) return;
    this.#failure = error;
    this.#failed.reject(error);
    void this.close();
  }

  /** Closes every member (a joined one is told the run ended); waits for this process's threads. */
  close(): Promise<void> {
    if (this.#closed) return this.#closed;
    clearInterval(this.#ticker);
    this.#threads.mark();
    const reason = this.#failure ? `the run stopped: ${this.#failure.message}` : "the run ended";
    for (const member of this.#members) member.close(reason);
    this.#closed = this.#threads.exited().then(() => {});
    return this.#closed;
  }

  /** Listens to `member` (built already: a local one). */
  #adopt(member: Member): void {
    if (!this.#members.includes(member)) this.#members.push(member);
    member.mailbox.handle<ResultMessage>("result", (m) => this.#onResult(member, m));
    member.mailbox.handle<EvalResultMessage>("evalResult", (m) => this.#onResult(member, m));
    member.mailbox.handle<MemberErrorMessage>("error", (m) => this.#drop(member, m.message));
    member.mailbox.receive("never").catch((error) => this.#drop(member, error.message));
    this.#onMember({
      type: "joined",
      name: member.name,
      device: `${member.device!.backend}: ${member.device!.adapter}`,
    });
    this.#memberArrived?.();
    this.#onChange(this.members());
    this.#dispatch();
  }

  /** Builds a member that joined: its replica must be the run's. */
  async #build(member: Member): Promise<void> {
    const init: MemberInitMessage = {
      type: "memberInit",
      config: this.#plan.member,
      sendWeights: false,
    };
    member.mailbox.send(init);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const ready = await Promise.race([
        member.mailbox.receive<MemberReadyMessage | MemberErrorMessage>(["memberReady", "error"]),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new Error(
                  `it was not ready within the start-up timeout of ${this.#plan.startupTimeout} s`,
                ),
              ),
            this.#plan.startupTimeout * 1000,
          );
        }),
      ]);
      if (ready.type === "error") throw new Error(ready.message);
      const mismatch = differs(ready, this.#ready);
      if (mismatch) throw new Error(`its model differs from the run's: ${mismatch}`);
      member.device = ready.device;
      member.ready = true;
      if (this.#failure || this.#closed) return member.close("the run ended");
      this.#adopt(member);
    } catch (error) {
      this.#drop(member, (error as Error).message);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Waits until enough members are ready (saying so once); false if halted meanwhile. */
  async #enoughMembers(halt: AbortSignal | undefined): Promise<boolean> {
    const count = () => this.#members.filter((m) => m.ready && !m.gone).length;
    if (count() >= this.#plan.minMembers) return true;
    this.#onMember({ type: "paused", members: count(), minMembers: this.#plan.minMembers });
    while (count() < this.#plan.minMembers) {
      if (halt?.aborted) return false;
      const halted = Promise.withResolvers<void>();
      halt?.addEventListener("abort", () => halted.resolve(), { once: true });
      await Promise.race([
        new Promise<void>((resolve) => this.#memberArrived = resolve),
        halted.promise,
        this.#failed.promise,
      ]);
    }
    this.#onMember({ type: "resumed", members: count() });
    return true;
  }

  /** Hands out `messages` as tasks; resolves with their results, in order. */
  async #compute(
    messages: (WorkMessage | EvalWorkMessage)[],
  ): Promise<(ResultMessage | EvalResultMessage)[]> {
    const tasks: Task[] = messages.map((message) => {
      const id = this.#nextTask++;
      return {
        id,
        message: { ...message, id },
        holders: new Map(),
        result: undefined,
        by: undefined,
        check: undefined,
      };
    });
    const round: Round = {
      tasks,
      pending: [...tasks],
      recompute: [],
      remaining: tasks.length,
      done: Promise.withResolvers(),
    };
    if (messages[0]?.type === "work") { // shares are of training steps, not evaluations
      for (const member of this.#members) member.stepShards = 0;
    }
    this.#round = round;
    this.#dispatch();
    try {
      await Promise.race([round.done.promise, this.#failed.promise]);
    } finally {
      this.#round = null;
    }
    this.#onChange(this.members());
    return tasks.map((task) => task.result!);
  }

  /** Gives every idle member a task: a pending one, or one it should finish sooner. */
  #dispatch(): void {
    const round = this.#round;
    if (round === null) return;
    for (const member of this.#members) {
      if (!member.ready || member.gone || member.task !== undefined) continue;
      const task = (member.local ? round.recompute.shift() : undefined) ?? round.pending.shift() ??
        this.#speculate(member, round);
      if (task === undefined) continue;
      this.#sendWeights(member);
      member.task = task;
      member.since = performance.now();
      task.holders.set(member, member.since);
      member.mailbox.send({ ...task.message, version: this.#version });
    }
  }

  /** Sends `member` the current weights, unless it holds them already. */
  #sendWeights(member: Member): void {
    if (member.version === this.#version) return;
    const weights: MemberWeightsMessage = {
      type: "weights",
      version: this.#version,
      weights: this.#weights.slice(),
    };
    member.mailbox.send(weights, [weights.weights.buffer]);
    member.version = this.#version;
  }

  /**
   * A task still computed elsewhere that `member` is expected to finish
   * first (by recent times per shard: the holder's time left is more than
   * `member`'s time per shard, or the holder has taken twice as long as
   * either's), the one expected to take longest; at most two members hold a
   * task.
   */
  #speculate(member: Member, round: Round): Task | undefined {
    const mine = member.msPerShard;
    if (mine === undefined) return undefined;
    const now = performance.now();
    let best: { task: Task; left: number } | undefined;
    for (const task of round.tasks) {
      if (task.result !== undefined || task.check || task.holders.size !== 1) continue;
      const [holder, since] = [...task.holders][0];
      const expected = holder.msPerShard ?? Infinity;
      const elapsed = now - since;
      const late = elapsed > 2 * Math.max(expected === Infinity ? 0 : expected, mine);
      const left = late ? Infinity : expected - elapsed;
      if (left > mine && (best === undefined || left > best.left)) best = { task, left };
    }
    return best?.task;
  }

  #onResult(member: Member, message: ResultMessage | EvalResultMessage): void {
    const task = member.task;
    if (task === undefined || task.id !== message.id) {
      return this.#drop(member, `it sent a result for work it was not given (${message.id})`);
    }
    if (!member.local) {
      const wrong = invalid(message, task, this.#ready.numReduced);
      if (wrong) return this.#drop(member, wrong);
    }
    const ms = performance.now() - member.since;
    member.task = undefined;
    task.holders.delete(member);
    if (message.type === "result") {
      member.shards++;
      member.msPerShard = member.msPerShard === undefined ? ms : 0.7 * member.msPerShard + 0.3 * ms;
    }
    const round = this.#round;
    if (task.result === undefined) {
      if (task.check) {
        // Held for a check: only this process's recomputation settles it.
        if (!member.local) return this.#dispatch();
        const { member: suspect, result } = task.check;
        task.check = undefined;
        if (!this.#verify(suspect, result, message)) return this.#settle(task, member, message);
        return this.#settle(task, suspect, message);
      }
      if (!member.local && this.#plan.verify.fraction > 0 && this.#draw()) {
        task.check = { member, result: message };
        const recomputing = [...task.holders.keys()].some((m) => m.local);
        if (!recomputing) round?.recompute.push(task);
        return this.#dispatch();
      }
      return this.#settle(task, member, message);
    }
    // Late: compared with the counted result for free when that one is this process's.
    if (!member.local && task.by?.local && this.#plan.verify.fraction > 0) {
      this.#verify(member, message, task.result);
    }
    if (!member.local) this.#onChange(this.members()); // its count of shards computed
    this.#dispatch();
  }

  /** `message` is `task`'s result, credited to `member`. */
  #settle(task: Task, member: Member, message: ResultMessage | EvalResultMessage): void {
    task.result = message;
    task.by = member;
    if (message.type === "result" && !member.gone) {
      member.counted++;
      member.stepShards++;
    }
    const round = this.#round;
    if (round && --round.remaining === 0) round.done.resolve();
    this.#dispatch();
  }

  /** Whether this result is checked (`verify.fraction`), drawn so no member can predict it. */
  #draw(): boolean {
    const fraction = this.#plan.verify.fraction;
    return fraction >= 1 || crypto.getRandomValues(new Uint32Array(1))[0] / 2 ** 32 < fraction;
  }

  /**
   * Compares `suspect`'s result with `trusted` (this process's, for the same
   * work); drops it when they differ beyond its tolerance. True when it passed.
   */
  #verify(
    suspect: Member,
    result: ResultMessage | EvalResultMessage,
    trusted: ResultMessage | EvalResultMessage,
  ): boolean {
    if (suspect.gone) return false;
    const same = sameDevice(suspect.device, this.device);
    const tolerance = same ? 0 : this.#plan.verify.tolerance;
    const difference = resultDifference(result, trusted);
    suspect.verified++;
    this.#onMember({ type: "verified", name: suspect.name, difference, tolerance });
    if (difference <= tolerance) return true;
    this.#drop(
      suspect,
      `its result differs from this process's for the same work: relative difference ` +
        `${difference.toExponential(2)}, ` +
        (same ? "on the same kind of device (must be 0)" : `over its tolerance of ${tolerance}`),
    );
    return false;
  }

  /** Drops `member` with one line; its task goes to another. A local member fails the run. */
  #drop(member: Member, reason: string): void {
    if (member.gone || this.#closed) return;
    member.gone = true;
    member.close(`dropped: ${reason}`);
    if (member.local) {
      this.fail(new WorkerError(member.id, reason));
      return;
    }
    const task = member.task;
    member.task = undefined;
    if (task) {
      task.holders.delete(member);
      if (task.result === undefined && task.holders.size === 0 && !task.check) {
        this.#round?.pending.unshift(task);
      }
    }
    const index = this.#members.indexOf(member);
    if (index >= 0) this.#members.splice(index, 1);
    this.#onMember({
      type: "left",
      name: member.name,
      reason,
      shards: member.shards,
      counted: member.counted,
    });
    this.#onChange(this.members());
    this.#dispatch();
  }

  /** Drops members that hold a task past their deadline. */
  #checkDeadlines(): void {
    const now = performance.now();
    for (const member of [...this.#members]) {
      if (member.task === undefined || member.gone) continue;
      const limit = this.#deadlineMs(member);
      if (now - member.since > limit) {
        this.#drop(
          member,
          `it sent nothing for ${Math.round((now - member.since) / 1000)} s, ` +
            `over its deadline of ${Math.round(limit / 1000)} s`,
        );
      }
    }
  }

  /**
   * How long `member` may hold a task: the start-up timeout for its first
   * (which compiles its shaders); then the step timeout, or by default 20
   * times its recent time per shard, at least 30 s.
   */
  #deadlineMs(member: Member): number {
    if (member.msPerShard === undefined) return this.#plan.startupTimeout * 1000;
    if (this.#plan.stepTimeout !== undefined) return this.#plan.stepTimeout * 1000;
    return Math.max(30_000, 20 * member.msPerShard);
  }

  /** Averages the shards' results in shard order and applies the optimizer. */
  #update(results: ResultMessage[], at: { epoch: number; step: number; lr: number }): void {
    const average = weightedAverage(
      results.map((r) => ({ data: r.gradients, weight: r.count })),
    );
    const n = this.#ready.numParams;
    for (let i = 0; i < average.length; i++) {
      if (!Number.isFinite(average[i])) {
        throw new DivergedError({
          epoch: at.epoch,
          step: at.step + 1,
          what: `the averaged gradient holds ${average[i]} (element ${i})`,
        });
      }
    }
    if (this.#plan.member.wire === "bf16") roundToBf16(average, 0, n);
    this.#optimizer.step(this.#weights.subarray(0, n), average.subarray(0, n), { lr: at.lr });
    // The statistics follow the trainable values; each takes its place in the weights.
    let from = n;
    for (const { offset, size } of this.#ready.statistics) {
      this.#weights.set(average.subarray(from, from + size), offset);
      from += size;
    }
    this.#version++;
  }

  /** Correct predictions on the test set, computed by the members. */
  async #evaluate(epoch: number, plan: EpochPlan): Promise<number> {
    const size = this.#plan.evalBatchSize;
    const messages: EvalWorkMessage[] = [];
    for (let start = 0; start < this.#test.count; start += size) {
      const indices = Array.from(
        { length: Math.min(size, this.#test.count - start) },
        (_, i) => start + i,
      );
      messages.push({
        type: "evalWork",
        id: 0,
        version: this.#version,
        batch: gatherBatch(this.#test, indices),
      });
    }
    let done = 0;
    let correct = 0;
    const results = await this.#compute(messages) as EvalResultMessage[];
    for (const result of results) {
      correct += result.correct;
      done += result.count;
    }
    plan.onEvaluate?.({ epoch, done, total: this.#test.count });
    return correct;
  }

  /** Every member's weights against these: a member that differs is dropped (here: fails). */
  async #compareChecksums(epoch: number): Promise<void> {
    const expected = await weightsChecksum(this.#weights);
    const asked = this.#members.filter((m) => m.ready && !m.gone);
    await Promise.all(asked.map(async (member) => {
      this.#sendWeights(member);
      member.mailbox.send({ type: "checksum", version: this.#version });
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        const reply = await Promise.race([
          member.mailbox.receive<ChecksumMessage>("checksum"),
          new Promise<never>((_, reject) => {
            timer = setTimeout(
              () => reject(new Error("it did not send its weights' checksum within 30 s")),
              30_000,
            );
          }),
        ]);
        if (reply.checksum === expected) return;
        if (member.local) {
          throw new ReplicaDivergenceError(
            `after epoch ${epoch}: the weights of ${member.name} differ from the run's`,
          );
        }
        this.#drop(member, `after epoch ${epoch} its weights differ from the run's`);
      } catch (error) {
        if (error instanceof ReplicaDivergenceError) throw error;
        this.#drop(member, (error as Error).message);
      } finally {
        clearTimeout(timer);
      }
    }));
    if (this.#failure) throw this.#failure;
  }

  /** The state after `stepsDone` steps, for a checkpoint. */
  async #snapshot(stepsDone: number, sums: EpochSums) {
    const weights = this.#weights.slice();
    return {
      stepsDone,
      sums,
      weights,
      checksum: await weightsChecksum(weights),
      optimizer: this.#optimizer.state(),
    };
  }
}

/** Whether two members compute on the same kind of device (so their results must be equal). */
function sameDevice(a: DeviceInfo | undefined, b: DeviceInfo): boolean {
  return a !== undefined && a.backend === b.backend && a.adapter === b.adapter &&
    a.kernels === b.kernels;
}

/**
 * How far `result` is from `trusted`: for a shard, the largest of the
 * gradients' relative difference (L2 norm of the difference over the
 * trusted one's), the loss sum's, and the correct count's (over the
 * examples); for a test batch, the correct count's. 0 when equal; Infinity
 * when the trusted value is 0 and the other is not.
 *
 * @example A gradient half as large again differs by 0.5
 * ```ts
 * import assert from "node:assert/strict";
 * import { resultDifference } from "./elastic_group.ts";
 *
 * const trusted = {
 *   type: "result" as const, id: 1, lossSum: 2, correct: 3, count: 4,
 *   gradients: new Float32Array([0.5, -1, 2]),
 * };
 * const biased = { ...trusted, gradients: trusted.gradients.map((v) => v * 1.5) };
 * assert.equal(resultDifference(biased, trusted), 0.5);
 * assert.equal(resultDifference({ ...trusted, correct: 4 }, trusted), 0.25); // of 4 examples
 * assert.equal(resultDifference(trusted, trusted), 0);
 * ```
 */
export function resultDifference(
  result: ResultMessage | EvalResultMessage,
  trusted: ResultMessage | EvalResultMessage,
): number {
  const relative = (d: number, of: number) => d === 0 ? 0 : of === 0 ? Infinity : d / of;
  let worst = relative(Math.abs(result.correct - trusted.correct), trusted.count);
  if (result.type === "result" && trusted.type === "result") {
    const a = result.gradients;
    const b = trusted.gradients;
    let diff = 0;
    let norm = 0;
    for (let i = 0; i < b.length; i++) {
      const d = a[i] - b[i];
      diff += d * d;
      norm += b[i] * b[i];
    }
    worst = Math.max(
      worst,
      relative(Math.sqrt(diff), Math.sqrt(norm)),
      relative(Math.abs(result.lossSum - trusted.lossSum), Math.abs(trusted.lossSum)),
    );
  }
  return worst;
}

/** What makes a joined member's replica differ from the run's, or undefined. */
function differs(ready: MemberReadyMessage, run: MemberReadyMessage): string | undefined {
  for (const key of ["numWeights", "numParams", "numReduced", "numClasses"] as const) {
    if (ready[key] !== run[key]) return `${key} ${ready[key]}, the run's ${run[key]}`;
  }
  if (JSON.stringify(ready.statistics) !== JSON.stringify(run.statistics)) {
    return "its batch-normalisation statistics are laid out differently";
  }
  if (ready.inputShape.join("×") !== run.inputShape.join("×")) {
    return `input ${ready.inputShape.join("×")}, the run's ${run.inputShape.join("×")}`;
  }
  return undefined;
}

/** What is wrong with a result from outside this process, or undefined. */
function invalid(
  message: ResultMessage | EvalResultMessage,
  task: Task,
  numReduced: number,
): string | undefined {
  const batch = task.message.batch;
  if (message.type !== (task.message.type === "work" ? "result" : "evalResult")) {
    return `it sent a ${message.type} for a ${task.message.type}`;
  }
  if (message.count !== batch.count) {
    return `it sent a result of ${message.count} examples for a shard of ${batch.count}`;
  }
  if (message.type === "evalResult") {
    const ok = Number.isInteger(message.correct) && message.correct >= 0 &&
      message.correct <= batch.count;
    return ok ? undefined : `it sent an impossible count of ${message.correct} correct`;
  }
  if (!(message.gradients instanceof Float32Array) || message.gradients.length !== numReduced) {
    const got = message.gradients instanceof Float32Array
      ? `${message.gradients.length} values`
      : "no float32 values";
    return `it sent a gradient of ${got}, expected ${numReduced}`;
  }
  if (!Number.isFinite(message.lossSum)) return `it sent a loss of ${message.lossSum}`;
  if (!Number.isInteger(message.correct) || message.correct < 0 || message.correct > batch.count) {
    return `it sent an impossible count of ${message.correct} correct`;
  }
  const g = message.gradients;
  let sum = 0;
  for (let i = 0; i < g.length; i++) sum += g[i] * 0;
  if (sum !== 0) {
    const index = g.findIndex((v) => !Number.isFinite(v));
    return `it sent a gradient holding ${g[index]} (element ${index})`;
  }
  return undefined;
}
