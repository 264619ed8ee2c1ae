/**
 * What a member of an elastic run does (see member_protocol.ts): build a
 * replica, then compute what it is handed — one shard's gradient, or a test
 * batch's correct count — with the weights it was last sent. It keeps no
 * state of the run but those weights, so it can join at any step boundary
 * and leave at any time. The same code runs in a worker thread of the
 * serving process, in a process that joined with `--join`, and in a browser
 * tab.
 *
 * @module
 */

import type { Channel } from "../../collective/channel.ts";
import { Mailbox } from "../../collective/mailbox.ts";
import { UsageError } from "../../errors.ts";
import { buildModel } from "../../model/registry.ts";
import { weightsChecksum } from "../../util/sha256.ts";
import { initBackend } from "../shared/backend.ts";
import { type KernelSet, useKernels } from "../../kernels/mod.ts";
import type {
  ChecksumMessage,
  ChecksumRequest,
  EvalResultMessage,
  EvalWorkMessage,
  MemberErrorMessage,
  MemberInitMessage,
  MemberReadyMessage,
  MemberWeightsMessage,
  ResultMessage,
  WorkMessage,
} from "../shared/member_protocol.ts";
import { Replica } from "./replica.ts";

/** What a member reports of its work, as it goes (for a page to show). */
export interface MemberActivity {
  /** Shards computed so far. */
  shards: number;
  /** Test batches evaluated so far. */
  evaluated: number;
  /** Milliseconds of the last shard. */
  lastShardMs: number;
}

/**
 * Serves as a member over `channel` until the coordinator closes it or
 * something fails (then an `error` message says what, and it resolves).
 * `onActivity` is told after each piece of work; `onReady` once the replica
 * is built, with its device.
 *
 * @example The whole of a member's worker thread
 * ```ts ignore
 * import { parentChannel } from "../../collective/worker_thread.ts";
 * import { serveMember } from "./member_service.ts";
 *
 * await serveMember(parentChannel());
 * ```
 */
export async function serveMember(
  channel: Channel,
  hooks: {
    /** Refuse a run whose model is a module of its own (a member outside the run's process). */
    builtInOnly?: boolean;
    /**
     * The kernel set to use on this adapter (default: the run's); e.g. a
     * browser's software adapter that the fast kernels do not run on.
     */
    kernelsFor?: (adapter: string, wanted: KernelSet) => KernelSet;
    onReady?: (ready: MemberReadyMessage) => void;
    onActivity?: (activity: MemberActivity) => void;
  } = {},
): Promise<void> {
  const mailbox = new Mailbox(channel);
  let replica: Replica | undefined;
  try {
    const init = await mailbox.receive<MemberInitMessage>("memberInit");
    const { config } = init;
    if (hooks.builtInOnly && config.model.name === "custom") {
      throw new Error(
        "the run trains a model of its own (a module); a member that joins builds built-in models only",
      );
    }
    const device = await initBackend(config.backend, { kernels: config.kernels });
    const kernels = device.kernels && hooks.kernelsFor?.(device.adapter, device.kernels);
    if (kernels !== undefined && kernels !== device.kernels) {
      useKernels(kernels);
      device.kernels = kernels;
    }
    const model = await buildModel(config.model).catch((error) => {
      if (error instanceof UsageError) (error as Error & { model?: boolean }).model = true;
      throw error;
    });
    replica = new Replica({
      model,
      normalize: config.normalize,
      bf16Gradients: config.wire === "bf16",
    });
    const built = replica;
    const [height, width, channels] = built.inputShape;
    const ready: MemberReadyMessage = {
      type: "memberReady",
      device,
      numWeights: built.numWeights,
      numParams: built.numParams,
      numReduced: built.numReduced,
      statistics: built.statisticsLayout,
      inputShape: [height, width, channels],
      numClasses: built.numClasses,
      weights: init.sendWeights ? await built.getWeights() : undefined,
    };
    mailbox.send(ready, ready.weights ? [ready.weights.buffer] : []);
    hooks.onReady?.(ready);
    const activity: MemberActivity = { shards: 0, evaluated: 0, lastShardMs: 0 };
    let version = -1;
    // Work runs one piece at a time, in the order it arrived.
    let queue = Promise.resolve();
    const inOrder = (work: () => Promise<void>) => {
      queue = queue.then(work).catch((error) => {
        report(mailbox, error);
        mailbox.fail(error instanceof Error ? error : new Error(String(error)));
      });
    };
    const checkVersion = (wanted: number) => {
      if (wanted !== version) {
        throw new Error(`asked to compute with weights ${wanted}, but it holds ${version}`);
      }
    };
    mailbox.handle<MemberWeightsMessage>("weights", (message) =>
      inOrder(() => {
        built.setWeights(message.weights);
        version = message.version;
        return Promise.resolve();
      }));
    mailbox.handle<WorkMessage>("work", (message) =>
      inOrder(async () => {
        checkVersion(message.version);
        const started = performance.now();
        const local = await built.computeGradients(message.batch, {
          dropoutSeed: message.dropoutSeed,
        });
        const result: ResultMessage = {
          type: "result",
          id: message.id,
          gradients: local.gradients.slice(),
          lossSum: local.lossSum,
          correct: local.correct,
          count: local.count,
        };
        mailbox.send(result, [result.gradients.buffer]);
        activity.shards++;
        activity.lastShardMs = performance.now() - started;
        hooks.onActivity?.({ ...activity });
      }));
    mailbox.handle<EvalWorkMessage>("evalWork", (message) =>
      inOrder(async () => {
        checkVersion(message.version);
        const correct = await built.countCorrect(message.batch);
        const result: EvalResultMessage = {
          type: "evalResult",
          id: message.id,
          correct,
          count: message.batch.count,
        };
        mailbox.send(result);
        activity.evaluated++;
        hooks.onActivity?.({ ...activity });
      }));
    mailbox.handle<ChecksumRequest>("checksum", (message) =>
      inOrder(async () => {
        checkVersion(message.version);
        const reply: ChecksumMessage = {
          type: "checksum",
          version,
          checksum: await weightsChecksum(await built.getWeights()),
        };
        mailbox.send(reply);
      }));
    // Until the coordinator closes the channel (or something above failed it).
    await mailbox.receive("never").catch(() => {});
  } catch (error) {
    report(mailbox, error);
  } finally {
    replica?.dispose();
  }
}

function report(mailbox: Mailbox, error: unknown): void {
  if (mailbox.error) return; // the coordinator closed the channel
  const message: MemberErrorMessage = {
    type: "error",
    message: error instanceof Error ? error.message : String(error),
    model: (error as { model?: boolean })?.model || undefined,
  };
  mailbox.send(message);
}
