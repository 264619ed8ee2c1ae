/**
 * Where a training process stands in a multi-process job, read the way the
 * usual launchers tell it: torchrun's variables (`RANK`, `WORLD_SIZE`,
 * `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`), Slurm's
 * (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, the first host of
 * `SLURM_JOB_NODELIST`), Open MPI's (`OMPI_COMM_WORLD_RANK`, …), or the
 * command line's `--nnodes`, `--node-rank`, `--master-addr`, `--master-port`
 * (which win over the environment). No scheduler of its own: whoever starts
 * the processes says who is who.
 *
 * @module
 */

import { UsageError } from "../../errors.ts";

/** A process's place in the job. */
export interface LaunchInfo {
  /** This process's rank, from 0. */
  rank: number;
  /** Number of processes. */
  worldSize: number;
  /** This process's rank among those on its host. */
  localRank: number;
  /** Processes on this host. */
  localWorldSize: number;
  /** Host of rank 0, where the others rendezvous. */
  masterAddr: string;
  /** Port rank 0 listens on. */
  masterPort: number;
  /** Which launcher's variables (or the flags) said so. */
  source: "flags" | "torchrun" | "slurm" | "openmpi";
}

/** The command line's launch flags (strings as parsed). */
export interface LaunchFlags {
  /** `--nnodes`: processes in the job (one per host). */
  nnodes?: string;
  /** `--node-rank`: this process's rank. */
  nodeRank?: string;
  /** `--master-addr`: rank 0's host. */
  masterAddr?: string;
  /** `--master-port`: rank 0's port. */
  masterPort?: string;
}

/** torchrun's default rendezvous port. */
export const DEFAULT_MASTER_PORT = 29500;

/**
 * This process's {@linkcode LaunchInfo} from `flags` and `env`, or undefined
 * when nothing says the job has more than this one process. Throws a
 * `UsageError` naming the variable or flag that is missing or malformed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { launchInfo } from "./launch_env.ts";
 *
 * const slurm = launchInfo({}, {
 *   SLURM_PROCID: "3", SLURM_NTASKS: "4", SLURM_LOCALID: "1",
 *   SLURM_TASKS_PER_NODE: "2(x2)", SLURM_JOB_NODELIST: "gpu[07-08]",
 * });
 * assert.deepEqual(slurm, {
 *   rank: 3, worldSize: 4, localRank: 1, localWorldSize: 2,
 *   masterAddr: "gpu07", masterPort: 29500, source: "slurm",
 * });
 * assert.equal(launchInfo({}, {}), undefined);
 * ```
 */
export function launchInfo(
  flags: LaunchFlags,
  env: Record<string, string | undefined>,
): LaunchInfo | undefined {
  const port = (value: string | undefined, name: string) =>
    value === undefined ? DEFAULT_MASTER_PORT : integer(value, name, { min: 0, max: 65535 });
  if (flags.nnodes !== undefined || flags.nodeRank !== undefined) {
    const worldSize = integer(flags.nnodes, "--nnodes", { min: 1 });
    const rank = integer(flags.nodeRank, "--node-rank", { min: 0, max: worldSize - 1 });
    const masterAddr = flags.masterAddr ?? env.MASTER_ADDR;
    if (masterAddr === undefined || masterAddr === "") {
      throw new UsageError("--nnodes needs --master-addr (or MASTER_ADDR): rank 0's host");
    }
    return {
      rank,
      worldSize,
      localRank: 0,
      localWorldSize: 1,
      masterAddr,
      masterPort: port(flags.masterPort ?? env.MASTER_PORT, "--master-port"),
      source: "flags",
    };
  }
  if (env.RANK !== undefined && env.WORLD_SIZE !== undefined) {
    const worldSize = integer(env.WORLD_SIZE, "WORLD_SIZE", { min: 1 });
    return {
      rank: integer(env.RANK, "RANK", { min: 0, max: worldSize - 1 }),
      worldSize,
      localRank: integer(env.LOCAL_RANK ?? "0", "LOCAL_RANK", { min: 0 }),
      localWorldSize: integer(env.LOCAL_WORLD_SIZE ?? "1", "LOCAL_WORLD_SIZE", { min: 1 }),
      masterAddr: required(env.MASTER_ADDR, "MASTER_ADDR"),
      masterPort: port(env.MASTER_PORT, "MASTER_PORT"),
      source: "torchrun",
    };
  }
  if (env.SLURM_PROCID !== undefined && env.SLURM_NTASKS !== undefined) {
    const worldSize = integer(env.SLURM_NTASKS, "SLURM_NTASKS", { min: 1 });
    return {
      rank: integer(env.SLURM_PROCID, "SLURM_PROCID", { min: 0, max: worldSize - 1 }),
      worldSize,
      localRank: integer(env.SLURM_LOCALID ?? "0", "SLURM_LOCALID", { min: 0 }),
      localWorldSize: tasksOnThisNode(env.SLURM_TASKS_PER_NODE),
      masterAddr: env.MASTER_ADDR ??
        firstHost(required(env.SLURM_JOB_NODELIST, "SLURM_JOB_NODELIST")),
      masterPort: port(env.MASTER_PORT, "MASTER_PORT"),
      source: "slurm",
    };
  }
  if (env.OMPI_COMM_WORLD_RANK !== undefined && env.OMPI_COMM_WORLD_SIZE !== undefined) {
    const worldSize = integer(env.OMPI_COMM_WORLD_SIZE, "OMPI_COMM_WORLD_SIZE", { min: 1 });
    return {
      rank: integer(env.OMPI_COMM_WORLD_RANK, "OMPI_COMM_WORLD_RANK", {
        min: 0,
        max: worldSize - 1,
      }),
      worldSize,
      localRank: integer(env.OMPI_COMM_WORLD_LOCAL_RANK ?? "0", "OMPI_COMM_WORLD_LOCAL_RANK", {
        min: 0,
      }),
      localWorldSize: integer(env.OMPI_COMM_WORLD_LOCAL_SIZE ?? "1", "OMPI_COMM_WORLD_LOCAL_SIZE", {
        min: 1,
      }),
      masterAddr: required(env.MASTER_ADDR, "MASTER_ADDR"),
      masterPort: port(env.MASTER_PORT, "MASTER_PORT"),
      source: "openmpi",
    };
  }
  return undefined;
}

/**
 * The first host of a Slurm node list: `gpu[07-08,11],cpu1` → `gpu07`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { firstHost } from "./launch_env.ts";
 *
 * assert.equal(firstHost("gpu[07-08,11],cpu1"), "gpu07");
 * assert.equal(firstHost("node5,node6"), "node5");
 * ```
 */
export function firstHost(nodeList: string): string {
  const match = nodeList.match(/^([^,[\]]+)(?:\[([^\]]+)\])?/);
  if (match === null) throw new UsageError(`SLURM_JOB_NODELIST "${nodeList}" names no host`);
  const [, prefix, ranges] = match;
  if (ranges === undefined) return prefix;
  const first = ranges.split(",")[0].split("-")[0];
  if (!/^\d+$/.test(first)) throw new UsageError(`SLURM_JOB_NODELIST "${nodeList}" is malformed`);
  return prefix + first;
}

/** Tasks on the first node from `SLURM_TASKS_PER_NODE` (`"2(x3),1"` → 2); 1 when unset. */
function tasksOnThisNode(value: string | undefined): number {
  if (value === undefined) return 1;
  const match = value.match(/^(\d+)/);
  if (match === null) throw new UsageError(`SLURM_TASKS_PER_NODE "${value}" is malformed`);
  return Number(match[1]);
}

function required(value: string | undefined, name: string): string {
  if (value === undefined || value === "") throw new UsageError(`${name} is not set`);
  return value;
}

function integer(
  value: string | undefined,
  name: string,
  range: { min: number; max?: number },
): number {
  if (value === undefined) throw new UsageError(`${name} is not set`);
  const n = Number(value);
  const max = range.max ?? Number.MAX_SAFE_INTEGER;
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < range.min || n > max) {
    const bounds = range.max === undefined ? `≥ ${range.min}` : `in ${range.min}..${max}`;
    throw new UsageError(`${name} must be a whole number ${bounds}, got "${value}"`);
  }
  return n;
}
