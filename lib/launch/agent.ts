/**
 * The launcher's agent (as torchrun's): starts this host's processes of a
 * job with their places in it (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`,
 * `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`) and the job's token in
 * `DDP_TOKEN` (in the environment only: never printed, never on a command
 * line); prefixes every line they print with their rank; forwards Ctrl-C and
 * SIGTERM to all of them; when one fails, stops the others and starts the
 * group again, up to `maxRestarts` times; and ends with the worst status.
 *
 * The processes run in process groups of their own, so that a terminal's
 * Ctrl-C reaches them once, through the agent, not twice.
 *
 * @module
 */

import { lines } from "../util/lines.ts";

/** What the agent starts, and how. */
export interface LaunchPlan {
  /** Processes on this host. */
  nprocPerNode: number;
  /** Hosts in the job. Default 1. */
  nnodes?: number;
  /** This host's rank among the hosts. Default 0. */
  nodeRank?: number;
  /** Rank 0's host. */
  masterAddr: string;
  /** Rank 0's port; undefined: a free port of this host, picked for every attempt (one host only). */
  masterPort?: number;
  /** Restarts of the whole group after a process fails. Default 0. */
  maxRestarts?: number;
  /** The job's shared secret, passed to every process as `DDP_TOKEN`. */
  token: string;
  /** The program and its arguments for an attempt (0 first, then each restart). */
  command(attempt: number): { program: string; args: string[] };
  /** The processes' environment, less their places in the job (default: none). */
  env?: Record<string, string>;
  /** Extra variables of local rank `localRank` (e.g. which GPU it uses). */
  envOf?(localRank: number): Record<string, string>;
  /** Seconds a stopped process has before SIGKILL. Default 30. */
  graceSeconds?: number;
}

/** Where the agent writes: its processes' lines, prefixed, and its own. */
export interface LaunchOutput {
  /** A line a process wrote to stdout (`rank` prefixed). */
  stdout(line: string): void;
  /** A line a process wrote to stderr, or one of the agent's own. */
  stderr(line: string): void;
}

/**
 * Runs the job's processes on this host to the end; resolves with the worst
 * exit status among the last attempt's processes (0 when all succeeded).
 * `signals` stops them (the signal is forwarded); an aborted attempt is not
 * restarted.
 *
 * @example Two processes that print their rank
 * ```ts
 * import assert from "node:assert/strict";
 * import { launch } from "./agent.ts";
 *
 * const lines: string[] = [];
 * const status = await launch({
 *   nprocPerNode: 2,
 *   masterAddr: "127.0.0.1",
 *   masterPort: 29500,
 *   token: "a token of some length",
 *   command: () => ({
 *     program: Deno.execPath(),
 *     args: ["eval", "console.log(`I am ${Deno.env.get('RANK')} of ${Deno.env.get('WORLD_SIZE')}`)"],
 *   }),
 * }, { stdout: (line) => lines.push(line), stderr: () => {} });
 * assert.equal(status, 0);
 * assert.deepEqual(lines.sort(), ["[rank 0] I am 0 of 2", "[rank 1] I am 1 of 2"]);
 * ```
 */
export async function launch(
  plan: LaunchPlan,
  output: LaunchOutput,
  signals?: { subscribe(forward: (signal: Deno.Signal) => void): () => void },
): Promise<number> {
  const nnodes = plan.nnodes ?? 1;
  const nodeRank = plan.nodeRank ?? 0;
  const worldSize = nnodes * plan.nprocPerNode;
  const maxRestarts = plan.maxRestarts ?? 0;
  for (let attempt = 0;; attempt++) {
    const masterPort = plan.masterPort ?? freePort(plan.masterAddr);
    const { program, args } = plan.command(attempt);
    const children = Array.from({ length: plan.nprocPerNode }, (_, localRank) => {
      const rank = nodeRank * plan.nprocPerNode + localRank;
      const child = new Deno.Command(program, {
        args,
        clearEnv: true,
        env: {
          ...plan.env,
          ...plan.envOf?.(localRank),
          RANK: `${rank}`,
          LOCAL_RANK: `${localRank}`,
          WORLD_SIZE: `${worldSize}`,
          LOCAL_WORLD_SIZE: `${plan.nprocPerNode}`,
          GROUP_RANK: `${nodeRank}`,
          MASTER_ADDR: plan.masterAddr,
          MASTER_PORT: `${masterPort}`,
          DDP_TOKEN: plan.token,
          DDP_RESTART_COUNT: `${attempt}`,
        },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        detached: true, // its own process group: a terminal's Ctrl-C comes through here, once
      }).spawn();
      const prefix = `[rank ${rank}] `;
      const printed = Promise.all([
        (async () => {
          for await (const line of lines(child.stdout)) output.stdout(prefix + line);
        })(),
        (async () => {
          for await (const line of lines(child.stderr)) output.stderr(prefix + line);
        })(),
      ]);
      const status = child.status.then(async (status) => {
        await printed;
        return status;
      });
      return { rank, child, status };
    });
    let stopping: Deno.Signal | undefined;
    const graceMs = (plan.graceSeconds ?? 30) * 1000;
    let killer: ReturnType<typeof setTimeout> | undefined;
    /** Sends `signal` to every process still running; SIGKILL follows after the grace time. */
    const stopAll = (signal: Deno.Signal) => {
      for (const { child } of children) {
        try {
          child.kill(signal);
        } catch {
          // it has ended
        }
      }
      if (signal !== "SIGKILL") killer ??= setTimeout(() => stopAll("SIGKILL"), graceMs);
    };
    const unsubscribe = signals?.subscribe((signal) => {
      stopping = signal;
      stopAll(signal); // a second Ctrl-C is forwarded too: the processes then quit at once
    });
    // The first process to fail stops the others.
    let failed = false;
    const statuses = await Promise.all(children.map(async ({ rank, status }) => {
      const ended = await status;
      if (!ended.success && !failed && stopping === undefined) {
        failed = true;
        output.stderr(`launch: rank ${rank} ${describeStatus(ended)}; stopping the others`);
        stopAll("SIGTERM");
      }
      return ended;
    }));
    clearTimeout(killer);
    unsubscribe?.();
    // Deno reports a process ended by a signal as a shell does: 128 + its number.
    const worst = Math.max(...statuses.map((status) => status.code));
    if (!failed || stopping !== undefined || attempt >= maxRestarts) {
      if (failed && stopping === undefined && maxRestarts > 0) {
        output.stderr(`launch: no restarts left (${maxRestarts} used); exiting with ${worst}`);
      }
      return worst;
    }
    output.stderr(`launch: restarting every process (restart ${attempt + 1} of ${maxRestarts})`);
  }
}

/** "exited with status 1", "was killed by SIGKILL". */
function describeStatus(status: Deno.CommandStatus): string {
  return status.signal ? `was killed by ${status.signal}` : `exited with status ${status.code}`;
}

/** A port free on `host` now (the kernel's pick). */
function freePort(host: string): number {
  const listener = Deno.listen({ hostname: host, port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}
