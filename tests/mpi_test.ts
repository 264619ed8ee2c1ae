/**
 * The MPI process group under Open MPI's `mpirun`, as a user starts it: 2
 * processes × 2 workers end with the bits of 1 process × 4; MPI's averages
 * are the TCP group's, bit for bit; a killed rank ends the job with MPI's
 * line naming it; Ctrl-C to mpirun checkpoints; a missing library, missing
 * FFI permission or TCP launch flags are one-line usage errors.
 */

import assert from "node:assert/strict";
import {
  ROOT,
  scriptArgs,
  scriptEnv,
  TASK_PERMISSIONS,
  TRAIN_PERMISSIONS,
  withTempDir,
  writeTinyDataset,
} from "./helpers.ts";
import {
  assertReferenceWeights,
  checkpointed,
  epochLines,
  pidOf,
  runFlags,
  singleProcessRun,
  spawnGuarded,
} from "./process_helpers.ts";
import { ignoredWithout } from "./skips.ts";
import { averageInputs, replicasOf, ROUNDS } from "./fixtures/mpi_inputs.ts";
import { importToken } from "../lib/collective/tcp/auth.ts";
import { TcpProcessGroup } from "../lib/collective/tcp/tcp_process_group.ts";
import { weightedAverage } from "../lib/collective/all_reduce.ts";
import { roundToBf16 } from "../lib/util/bf16.ts";
import { sha256Hex } from "../lib/util/sha256.ts";
import { listCheckpoints } from "../lib/train/shared/checkpoint.ts";

const ignore = await ignoredWithout("open-mpi");

/**
 * `mpirun -np size` of `script` with `args`. Each process may use every core
 * (`--bind-to none`: mpirun binds each to one core by default);
 * `sigkillSeconds` sets how long mpirun waits between the signals it sends
 * when it is stopped (SIGCONT, SIGTERM, SIGKILL).
 */
function mpirun(
  size: number,
  script: string,
  args: readonly string[],
  options: { permissions?: readonly string[]; sigkillSeconds?: number } = {},
) {
  return spawnGuarded("mpirun", [
    "--allow-run-as-root",
    "--oversubscribe",
    "--bind-to",
    "none",
    ...(options.sigkillSeconds
      ? ["--mca", "odls_base_sigkill_timeout", `${options.sigkillSeconds}`]
      : []),
    "-np",
    `${size}`,
    Deno.execPath(),
    ...scriptArgs(script, args, options.permissions ?? TRAIN_PERMISSIONS),
  ]);
}

Deno.test({
  name:
    "mpirun -np 2: 2 processes × 2 workers end with the weights of 1 process × 4; rank 0 alone writes",
  ignore,
  fn: async () => {
    await withTempDir(async (dir) => {
      const single = await singleProcessRun(dir, ["--workers=4"]);
      const flags = runFlags(dir, [
        "--workers=2",
        "--allreduce=mpi",
        `--export=${dir}/multi`,
        `--checkpoint-dir=${dir}/ckpt`,
      ]);
      const { code, stdout, stderr } = await mpirun(2, "scripts/train.ts", flags).output;
      assert.equal(code, 0, stderr);
      assert.match(stdout, /2 worker\(s\) × 2 processes \(this is rank 0; Open MPI v\d/);
      assert.match(stdout, /2 worker\(s\) × 2 processes \(this is rank 1; Open MPI v\d/);
      // Both ranks print every epoch's line (interleaved): the job's, equal to 1 × 4's.
      const lines = epochLines(stdout);
      assert.equal(lines.length, 4);
      assert.deepEqual([...new Set(lines)], epochLines(single.stdout));
      await assertReferenceWeights(dir);
      assert.equal((await listCheckpoints(`${dir}/ckpt`)).length, 2);
      assert.equal(stdout.match(/model saved to/g)?.length, 1);
    });
  },
});

Deno.test({
  name:
    "mpirun -np 3: MPI's averages are the TCP group's and weightedAverage's, bit for bit (uneven replicas, bfloat16)",
  ignore,
  fn: async () => {
    const size = 3;
    const { code, stdout, stderr } = await mpirun(size, "tests/fixtures/mpi_member.ts", [], {
      permissions: ["--allow-ffi", "--allow-env", "--allow-read"],
    }).output;
    assert.equal(code, 0, stderr);
    const mpi = new Map(
      [...stdout.matchAll(/^rank (\d+): (.+)$/gm)].map((m) => [Number(m[1]), m[2].split(",")]),
    );
    assert.deepEqual([...mpi.keys()].sort(), [0, 1, 2], stdout);
    // The same averages through the TCP group: three groups in this process, on loopback.
    const key = await importToken({ token: "mpi test's tcp token" });
    const port = Promise.withResolvers<number>();
    const common = { size, masterAddr: "127.0.0.1", key };
    const groups = await Promise.all(
      Array.from({ length: size }, async (_, rank) =>
        TcpProcessGroup.connect({
          ...common,
          rank,
          masterPort: rank === 0 ? 0 : await port.promise,
          onListening: port.resolve,
        })),
    );
    try {
      for (const [round, bf16Length] of ROUNDS.entries()) {
        const tcp = await Promise.all(
          groups.map((group, rank) =>
            group.average(averageInputs({ rank, size, round }), { bf16Length })
          ),
        );
        const terms = Array.from(
          { length: size },
          (_, rank) => averageInputs({ rank, size, round }),
        )
          .flat().map(({ data, weight }) => {
            const rounded = data.slice();
            roundToBf16(rounded, 0, bf16Length);
            return { data: rounded, weight };
          });
        const reference = weightedAverage(terms);
        roundToBf16(reference, 0, bf16Length);
        const want = await sha256Hex(new Uint8Array(reference.buffer));
        for (let rank = 0; rank < size; rank++) {
          assert.equal(await sha256Hex(new Uint8Array(tcp[rank].buffer)), want, `tcp rank ${rank}`);
          assert.equal(mpi.get(rank)![round], want, `mpi rank ${rank}, round ${round}`);
        }
      }
      assert.deepEqual([0, 1, 2].map(replicasOf), [2, 1, 2]);
    } finally {
      await Promise.all(groups.map((g) => g.close()));
    }
  },
});

Deno.test({
  name: "mpirun: a killed rank ends the job, named by mpirun; Ctrl-C to mpirun checkpoints first",
  ignore,
  fn: async () => {
    await withTempDir(async (dir) => {
      await writeTinyDataset(dir, { train: 48, test: 16 });
      const flags = runFlags(dir, ["--workers=1", "--allreduce=mpi", "--epochs=10000"]);
      const killed = mpirun(2, "scripts/train.ts", [...flags, `--checkpoint-dir=${dir}/a`]);
      const victim = await pidOf(`${dir}/a`, "OMPI_COMM_WORLD_RANK=1");
      await checkpointed(`${dir}/a`); // training, past the first epoch
      Deno.kill(victim, "SIGKILL");
      const dead = await killed.output;
      assert.notEqual(dead.code, 0);
      assert.match(dead.stderr, /process rank 1 .* exited on signal 9 \(Killed\)/);

      // Ctrl-C to mpirun: it sends SIGCONT, waits odls_base_sigkill_timeout seconds, sends
      // SIGTERM, waits as long, then SIGKILL. Given that time, both processes agree on a step
      // and rank 0 writes its checkpoint.
      const job = mpirun(2, "scripts/train.ts", [...flags, `--checkpoint-dir=${dir}/b`], {
        sigkillSeconds: 5,
      });
      await checkpointed(`${dir}/b`);
      job.child.kill("SIGINT");
      const stopped = await job.output;
      const interrupted = stopped.stderr.match(/^interrupted after .*$/gm) ?? [];
      assert.equal(interrupted.length, 2, stopped.stdout + stopped.stderr);
      const [saved] = interrupted.flatMap((line) => line.match(/checkpoint (\/\S+)$/)?.[1] ?? []);
      assert.ok(saved, stopped.stdout);
      assert.equal((await listCheckpoints(`${dir}/b`)).at(-1)?.path, saved);
    });
  },
});

Deno.test({
  name: "mpirun: processes given different flags are refused at the start, naming the rank",
  ignore,
  fn: async () => {
    await withTempDir(async (dir) => {
      await writeTinyDataset(dir, { train: 48, test: 16 });
      const flags = (epochs: number) =>
        scriptArgs(
          "scripts/train.ts",
          runFlags(dir, ["--allreduce=mpi", `--epochs=${epochs}`]),
          TRAIN_PERMISSIONS,
        );
      const { code, stderr } = await spawnGuarded("mpirun", [
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        "1",
        Deno.execPath(),
        ...flags(1),
        ":",
        "-np",
        "1",
        Deno.execPath(),
        ...flags(2),
      ]).output;
      assert.notEqual(code, 0);
      const lines = stderr.match(/^error: .*$/gm);
      assert.deepEqual(lines, [
        "error: rank 1 was given other options than rank 0: give every process the same flags",
        "error: rank 1 was given other options than rank 0: give every process the same flags",
      ]);
    });
  },
});

Deno.test("--allreduce mpi: a missing library, no FFI permission or TCP launch flags are one-line usage errors", async () => {
  const run = async (
    args: string[],
    options: { permissions?: string[]; env?: Record<string, string> } = {},
  ) => {
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: scriptArgs("scripts/train.ts", args, options.permissions ?? TRAIN_PERMISSIONS),
      cwd: ROOT,
      clearEnv: true,
      env: { ...scriptEnv(), ...options.env },
      stdout: "null",
      stderr: "piped",
    }).output();
    return { code, stderr: new TextDecoder().decode(stderr).trim() };
  };
  const missing = await run(["--allreduce=mpi"], {
    env: { DDP_MPI_LIBRARY: "libmpi-not-installed.so.40" },
  });
  assert.equal(missing.code, 2);
  assert.match(
    missing.stderr,
    /^error: the mpi process group needs Open MPI's library: DDP_MPI_LIBRARY=libmpi-not-installed\.so\.40 does not load \(.*\); install Open MPI/,
  );
  assert.equal(missing.stderr.split("\n").length, 1, missing.stderr);
  const noFfi = await run(["--allreduce=mpi"], { permissions: [...TASK_PERMISSIONS] });
  assert.equal(noFfi.code, 2);
  assert.equal(
    noFfi.stderr,
    "error: the mpi process group loads the MPI library through FFI: run deno with --allow-ffi",
  );
  const nnodes = await run(["--allreduce=mpi", "--nnodes=2"]);
  assert.equal(nnodes.code, 2);
  assert.equal(
    nnodes.stderr,
    "error: --nnodes does not go with --allreduce mpi: MPI gives each process its rank (start the processes with mpirun or srun)",
  );
});
