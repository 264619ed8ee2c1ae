/**
 * `train()`'s side of the live dashboard (`options.serve`): starts the
 * server, and hooks the run's callbacks so that every start, step, epoch and
 * end reaches it as an event (see `lib/serve/dashboard.ts`).
 *
 * @module
 */

import { importToken } from "../../collective/tcp/auth.ts";
import { describeValue, UsageError } from "../../errors.ts";
import { type Dashboard, type DashboardEvent, serveDashboard } from "../../serve/dashboard.ts";
import {
  DEFAULT_VERIFY_TOLERANCE,
  type ResolvedTrainOptions,
  type ServeOptions,
  type TrainOptions,
} from "../shared/options.ts";
import type { MemberEvent } from "../shared/member_protocol.ts";
import { readTokenVariable } from "./processes.ts";

/** A served run: its callbacks, hooked, and how to end it. */
export interface ServedRun {
  /** `options` with `onStart`, `onStep` and `onEpoch` also publishing to the dashboard. */
  hooked: TrainOptions;
  /** Says how the run ended, then closes the server. */
  end(message: string): Promise<void>;
  /** With `serve.elastic`: where members that join are handed, and how they are shown. */
  members?: {
    /** Members needed to compute. */
    minMembers: number;
    /** Checks of members outside this process. */
    verify: { fraction: number; tolerance: number };
    /** Told each change of membership. */
    onMember: (event: MemberEvent) => void;
    /** Every member socket that proved the token goes to `accept`, from now on. */
    accept(accept: (socket: WebSocket, peer: string) => void): void;
    /** Shows the members now on the page. */
    show(members: { name: string; device: string; shards: string }[]): void;
  };
}

/**
 * Starts the dashboard of a run with `options` (resolved: `given`).
 *
 * @example
 * ```ts ignore
 * const served = await serveRun(options, resolved);
 * try { await run(served.hooked); } finally { await served.end("done"); }
 * ```
 */
export async function serveRun(
  options: TrainOptions,
  given: ResolvedTrainOptions,
): Promise<ServedRun> {
  const serve = checkServe(options.serve);
  const group = given.distributed.processGroup;
  // The job's token if it has one; else a fresh one, given in the page's address.
  const tcp = group?.backend === "mpi" ? undefined : group;
  const named = serve.token ?? tcp?.token ?? (tcp?.tokenFile ? undefined : readTokenVariable());
  const fresh = named === undefined && tcp?.tokenFile === undefined
    ? [...crypto.getRandomValues(new Uint8Array(24))].map((b) => b.toString(16).padStart(2, "0"))
      .join("")
    : undefined;
  const key = await importToken({ token: named ?? fresh, file: tcp?.tokenFile }).catch((error) => {
    throw new UsageError(`serve: ${error.message}`);
  });
  let dashboard: Dashboard;
  try {
    dashboard = serveDashboard({
      hostname: serve.hostname,
      port: serve.port,
      key,
      members: serve.elastic !== undefined && serve.elastic !== false,
      memberScript: serve.elastic ? memberScript : undefined,
      onListening: ({ port }) => {
        const host = serve.hostname.includes(":") ? `[${serve.hostname}]` : serve.hostname;
        serve.onListening?.(
          `http://${host}:${port}/` + (fresh === undefined ? "" : `#token=${fresh}`),
        );
      },
    });
  } catch (error) {
    throw new UsageError(
      `serve: cannot listen on ${serve.hostname}:${serve.port}: ${(error as Error).message}`,
    );
  }
  const publish = (event: DashboardEvent) => dashboard.publish(event);
  let batchSize = given.batchSize;
  const hooked: TrainOptions = {
    ...options,
    onStart(info) {
      const { distributed } = info.options;
      batchSize = info.options.batchSize;
      const perReplica = distributed.batchShards / distributed.replicas;
      const rank = distributed.processGroup?.rank ?? 0;
      publish({
        type: "start",
        title:
          `${info.options.model.name} on ${info.trainCount} training / ${info.testCount} test examples, ` +
          `batch ${info.options.batchSize}, ${distributed.replicas} replica(s)`,
        stepsPerEpoch: info.stepsPerEpoch,
        epochs: info.options.epochs,
        members: Array.from({ length: distributed.replicas }, (_, g) => {
          const process = Math.floor(g / distributed.workers);
          const shards = Array.from({ length: perReplica }, (_, s) => g * perReplica + s);
          return {
            name: distributed.processGroup
              ? `rank ${process} worker ${g % distributed.workers}`
              : `worker ${g}`,
            device: process === rank ? info.device.adapter : `(rank ${process}'s)`,
            shards: `${shards.join(", ")} of ${distributed.batchShards}`,
          };
        }),
        joinable: Boolean(serve.elastic),
      });
      options.onStart?.(info);
    },
    onStep(progress) {
      publish({
        type: "step",
        epoch: progress.epoch,
        step: progress.step,
        steps: progress.steps,
        loss: progress.loss,
        trainAcc: progress.trainAcc,
        examplesPerSec: progress.seconds > 0 ? (progress.step * batchSize) / progress.seconds : 0,
      });
      options.onStep?.(progress);
    },
    onEpoch(record) {
      publish({ type: "epoch", ...record });
      return options.onEpoch?.(record);
    },
  };
  const elastic = serve.elastic === true ? {} : serve.elastic || undefined;
  return {
    hooked,
    async end(message) {
      publish({ type: "end", message });
      await dashboard.close();
    },
    members: elastic && {
      minMembers: elastic.minMembers ?? 1,
      verify: {
        fraction: elastic.verify ?? 0,
        tolerance: elastic.verifyTolerance ?? DEFAULT_VERIFY_TOLERANCE,
      },
      onMember: elastic.onMember ?? (() => {}),
      accept: (accept) => dashboard.acceptMembers(accept),
      show: (members) => publish({ type: "members", members }),
    },
  };
}

/** `serve`, checked: a usage error names what is wrong. */
function checkServe(serve: ServeOptions | undefined): ServeOptions {
  if (typeof serve !== "object" || serve === null) {
    throw new UsageError(`serve must be an object, got ${describeValue(serve)}`);
  }
  if (typeof serve.hostname !== "string" || serve.hostname === "") {
    throw new UsageError(
      `serve.hostname must be a host name, got ${describeValue(serve.hostname)}`,
    );
  }
  if (!Number.isInteger(serve.port) || serve.port < 0 || serve.port > 65535) {
    throw new UsageError(`serve.port must be a port number, got ${describeValue(serve.port)}`);
  }
  const elastic = serve.elastic;
  if (elastic !== undefined && typeof elastic !== "boolean") {
    if (typeof elastic !== "object" || elastic === null) {
      throw new UsageError(
        `serve.elastic must be true, false or an object, got ${describeValue(elastic)}`,
      );
    }
    const fraction = elastic.verify;
    if (
      fraction !== undefined && !(typeof fraction === "number" && fraction >= 0 && fraction <= 1)
    ) {
      throw new UsageError(
        `serve.elastic.verify must be a fraction from 0 to 1, got ${describeValue(fraction)}`,
      );
    }
    const tolerance = elastic.verifyTolerance;
    if (tolerance !== undefined && !(typeof tolerance === "number" && tolerance >= 0)) {
      throw new UsageError(
        `serve.elastic.verifyTolerance must be a number ≥ 0, got ${describeValue(tolerance)}`,
      );
    }
    const min = elastic.minMembers;
    if (min !== undefined && (!Number.isInteger(min) || min < 1 || min > 10_000)) {
      throw new UsageError(
        `serve.elastic.minMembers must be an integer from 1 to 10000, got ${describeValue(min)}`,
      );
    }
  }
  if (serve.token !== undefined && typeof serve.token !== "string") {
    throw new UsageError(`serve.token must be a string, got ${describeValue(serve.token)}`);
  }
  return serve;
}

let bundled: Promise<string> | undefined;

/**
 * The member code for a browser tab: `workers/browser_member.ts` and all it
 * imports (the replica, kernels, models, TensorFlow.js), bundled for the
 * browser by Deno's own bundler, once per process.
 */
function memberScript(): Promise<string> {
  bundled ??= (async () => {
    const bundle = (Deno as unknown as { bundle?: DenoBundle }).bundle;
    if (bundle === undefined) {
      throw new Error("Deno.bundle is missing: run with --unstable-bundle (deno task train does)");
    }
    const result = await bundle({
      entrypoints: [new URL("../../../workers/browser_member.ts", import.meta.url).href],
      platform: "browser",
      format: "esm",
      minify: true,
      write: false,
    });
    const text = result.outputFiles?.[0]?.text();
    if (!result.success || text === undefined) {
      throw new Error(result.errors.map((e) => e.text).join("; ") || "no output");
    }
    return text;
  })();
  bundled.catch(() => bundled = undefined); // tried again on the next request
  return bundled;
}

/** The part of `Deno.bundle` (`--unstable-bundle`) used here. */
type DenoBundle = (options: {
  entrypoints: string[];
  platform: "browser";
  format: "esm";
  minify: boolean;
  write: false;
}) => Promise<{
  success: boolean;
  errors: { text: string }[];
  outputFiles?: { text(): string }[];
}>;
