/**
 * The coordinator's side of a multi-process job: joining the other
 * processes, and handing every process rank 0's view of where the run stands
 * (its run identity and the checkpoint it resumes from), so that only rank 0
 * reads and writes checkpoints.
 *
 * @module
 */

import { decode, encode } from "npm:@msgpack/msgpack@3.1.3";
import type { ProcessGroup } from "../../collective/process_group.ts";
import { importToken } from "../../collective/tcp/auth.ts";
import { TcpProcessGroup } from "../../collective/tcp/tcp_process_group.ts";
import { MpiProcessGroup } from "../../collective/mpi/mpi_process_group.ts";
import { UsageError } from "../../errors.ts";
import { sha256Hex } from "../../util/sha256.ts";
import { decodeCheckpoint, encodeCheckpoint, type TrainingState } from "../shared/checkpoint.ts";
import type { ResolvedProcessGroup, ResolvedTrainOptions } from "../shared/options.ts";

/**
 * Joins the job's other processes (see `TcpProcessGroup`, `MpiProcessGroup`).
 * Processes whose options resolve differently are refused as they join, by a
 * digest of those options.
 *
 * @example
 * ```ts ignore
 * const processes = await joinProcesses(resolved.processGroup!, { options: resolved });
 * ```
 */
export async function joinProcesses(
  group: ResolvedProcessGroup,
  run: { options: ResolvedTrainOptions; signal?: AbortSignal },
): Promise<ProcessGroup> {
  // Every setting but this process's own place in the job (and its callbacks).
  const { processGroup: _, ...distributed } = run.options.distributed;
  const shared = { ...run.options, distributed };
  const digest = await sha256Hex(new TextEncoder().encode(JSON.stringify(shared)));
  if (group.backend === "mpi") {
    return await MpiProcessGroup.connect({ library: group.library, digest });
  }
  const key = await importToken({
    token: group.token ?? (group.tokenFile ? undefined : readTokenVariable()),
    file: group.tokenFile,
  }).catch((error) => {
    throw new UsageError((error as Error).message);
  });
  return await TcpProcessGroup.connect({
    rank: group.rank,
    size: group.size,
    masterAddr: group.masterAddr,
    masterPort: group.masterPort,
    key,
    digest,
    silenceMs: (group.peerTimeout ?? 60) * 1000,
    rendezvousTimeoutMs: (group.joinTimeout ?? 600) * 1000,
    signal: run.signal,
    onNotice: group.onNotice,
    onListening: group.onListening,
  });
}

/** Where a run stands, as rank 0 sees it. */
export interface RunPosition {
  /** The run's identity. */
  runId: string;
  /** The state to continue from, if any. */
  state?: TrainingState;
  /** Where rank 0 found it (a checkpoint path), if it came from disk. */
  path?: string;
}

/**
 * Rank 0's `position` on every process (the others' is ignored): the state
 * travels in the checkpoint format, checksum verified on arrival.
 *
 * @example
 * ```ts ignore
 * const { runId, state } = await sharePosition(processes, { runId: crypto.randomUUID() });
 * ```
 */
export async function sharePosition(
  processes: ProcessGroup,
  position: RunPosition,
): Promise<RunPosition> {
  const mine = processes.rank === 0
    ? encode({
      runId: position.runId,
      path: position.path,
      checkpoint: position.state && await encodeCheckpoint(position.state),
    }, { ignoreUndefined: true })
    : undefined;
  const bytes = await processes.broadcast(mine);
  if (processes.rank === 0) return position;
  const shared = decode(bytes) as { runId: string; path?: string; checkpoint?: Uint8Array };
  const state = shared.checkpoint &&
    await decodeCheckpoint(shared.checkpoint, { name: "rank 0's checkpoint" });
  return { runId: shared.runId, path: shared.path, state };
}

/** `DDP_TOKEN`, if set (and readable: without --allow-env a token must be given). */
export function readTokenVariable(): string | undefined {
  try {
    return Deno.env.get("DDP_TOKEN");
  } catch {
    return undefined; // without --allow-env: a token must be given
  }
}
