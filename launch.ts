/**
 * A process's place in a multi-process job, read the way PyTorch's torchrun
 * (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`), Slurm (`SLURM_*`) and
 * Open MPI (`OMPI_COMM_WORLD_*`) announce it, for `train()`'s
 * `distributed.processGroup`.
 *
 * @example One process of a job started by torchrun, Slurm or mpirun
 * ```ts ignore
 * import { train } from "./mod.ts";
 * import { launchInfo } from "./launch.ts";
 *
 * const launch = launchInfo({}, Deno.env.toObject());
 * await train({
 *   preset: "quick",
 *   distributed: {
 *     workers: 2,
 *     processGroup: launch && {
 *       rank: launch.rank,
 *       size: launch.worldSize,
 *       masterAddr: launch.masterAddr,
 *       masterPort: launch.masterPort,
 *       tokenFile: "job.token",
 *     },
 *   },
 * });
 * ```
 *
 * @module
 */

export {
  DEFAULT_MASTER_PORT,
  type LaunchFlags,
  type LaunchInfo,
  launchInfo,
} from "./lib/collective/tcp/launch_env.ts";
export type { ProcessGroupOptions } from "./mod.ts";
