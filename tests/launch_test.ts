/**
 * `deno task launch`, as a user runs it: 2 processes on this host train to
 * the bits of 1 process × 2 workers, through a restart after one is killed;
 * every line carries its rank and the token appears on no command line and in
 * no output; Ctrl-C to the launcher makes every process stop at the agreed
 * step (rank 0 checkpoints) and the launcher exit 130; launch mistakes are
 * usage errors. Device pinning is tested on the device-select layer's real
 * list here (llvmpipe only) and on made-up lists in lib/launch/devices.ts.
 */

import assert from "node:assert/strict";
import {
  ROOT,
  TRAIN_PERMISSIONS as TESTS_TRAIN_PERMISSIONS,
  withTempDir,
  writeTinyDataset,
} from "./helpers.ts";
import {
  assertReferenceWeights,
  checkpointed,
  pidOf,
  runFlags,
  singleProcessRun,
  spawnGuarded,
} from "./process_helpers.ts";
import { ignoredWithout } from "./skips.ts";
import { TRAIN_PERMISSIONS } from "../scripts/launch.ts";
import { listVulkanDevices } from "../lib/launch/devices.ts";
import { listCheckpoints } from "../lib/train/shared/checkpoint.ts";

/** `deno task launch` with `args`, as deno.json runs it. */
function startLauncher(args: readonly string[]) {
  const tasks = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`)).tasks;
  const [, , ...permissions] = (tasks.launch as string).replace(/ scripts\/launch\.ts$/, "")
    .split(" ");
  return spawnGuarded(Deno.execPath(), ["run", ...permissions, "scripts/launch.ts", ...args]);
}

/** What `ps` says with `args`. */
async function ps(args: string[]): Promise<string> {
  const { stdout } = await new Deno.Command("ps", { args, stdout: "piped" }).output();
  return new TextDecoder().decode(stdout).trim();
}

Deno.test("launch --nproc-per-node 2 --max-restarts 1: a killed process restarts the group, which ends with the bits of 1 process × 2 workers", async () => {
  await withTempDir(async (dir) => {
    await singleProcessRun(dir, ["--workers=2", "--epochs=4"]);
    const flags = runFlags(dir, [
      "--workers=1",
      "--epochs=4",
      `--checkpoint-dir=${dir}/ckpt`,
      `--export=${dir}/multi`,
    ]);
    const launcher = startLauncher(["--nproc-per-node=2", "--max-restarts=1", "--", ...flags]);
    const victim = await pidOf(`${dir}/ckpt`, "RANK=1");
    const withEnvironment = await ps(["-ww", "-o", "args=", "e", "-p", `${victim}`]);
    const token = withEnvironment.match(/ DDP_TOKEN=(\S+)/)![1];
    assert.ok(token.length >= 32);
    const commandLine = await ps(["-ww", "-o", "args=", "-p", `${victim}`]);
    assert.match(commandLine, /scripts\/train\.ts/);
    await checkpointed(`${dir}/ckpt`);
    Deno.kill(victim, "SIGKILL");
    const { code, stdout, stderr } = await launcher.output;
    assert.equal(code, 0, stderr);
    assert.match(stderr, /^launch: rank 1 was killed by SIGKILL; stopping the others$/m);
    assert.match(stderr, /^launch: restarting every process \(restart 1 of 1\)$/m);
    assert.match(stdout, /^\[rank 0\] resuming from .*ckpt-\d{4}-\d{6}\.msgpack/m);
    assert.match(stdout, /^\[rank 1\] resuming from rank 0's /m);
    // Every line of the processes carries its rank; the token is on no command line, in no line.
    const lines = (stdout + stderr).split("\n").filter((l) => l && !l.startsWith("launch: "));
    assert.deepEqual(lines.filter((l) => !/^\[rank [01]\] /.test(l)), []);
    assert.ok(!commandLine.includes(token) && !stdout.includes(token) && !stderr.includes(token));
    await assertReferenceWeights(dir);
  });
});

Deno.test("Ctrl-C to the launcher: every process stops at the agreed step, rank 0 checkpoints, the launcher exits 130", async () => {
  await withTempDir(async (dir) => {
    await writeTinyDataset(dir, { train: 48, test: 16 });
    const flags = runFlags(dir, ["--workers=1", "--epochs=10000", `--checkpoint-dir=${dir}/ckpt`]);
    const launcher = startLauncher(["--nproc-per-node=2", "--", ...flags]);
    await pidOf(`${dir}/ckpt`, "RANK=1");
    await checkpointed(`${dir}/ckpt`);
    launcher.child.kill("SIGINT");
    const { code, stderr } = await launcher.output;
    assert.equal(code, 130, stderr);
    const zero = stderr.match(/^\[rank 0\] interrupted after (.*); checkpoint (\S+)$/m);
    assert.ok(zero, stderr);
    assert.match(
      stderr,
      new RegExp(`^\\[rank 1\\] interrupted after ${RegExp.escape(zero[1])}; no checkpoint`, "m"),
    );
    assert.equal((await listCheckpoints(`${dir}/ckpt`)).at(-1)?.path, zero[2]);
  });
});

Deno.test("launch mistakes are one-line usage errors; the processes run with deno task train's permissions", async () => {
  const cases: [string[], string][] = [
    [["--", "--epochs=1"], "error: --nproc-per-node is needed (see --help)"],
    [["--nproc-per-node=0"], "error: --nproc-per-node must be at least 1, got 0"],
    [
      ["--nproc-per-node=2", "--nnodes=2", "--node-rank=1"],
      "error: --nnodes needs --master-addr: host 0's address, the same on every host",
    ],
    [
      ["--nproc-per-node=2", "--", "--master-port=4000"],
      "error: --master-port=4000 does not go after --: the launcher gives every process its place in the job",
    ],
    [
      ["--nproc-per-node=2", "--", "--allreduce", "mpi"],
      "error: --allreduce mpi does not go after --: the launcher gives every process its place in the job",
    ],
  ];
  for (const [args, message] of cases) {
    const { code, stderr } = await startLauncher(args).output;
    assert.equal(code, 2, `${args.join(" ")}: ${stderr}`);
    assert.equal(stderr.trim(), message);
  }
  const tasks = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`)).tasks;
  assert.equal(tasks.train, `deno run ${TRAIN_PERMISSIONS.join(" ")} scripts/train.ts`);
  assert.deepEqual(TESTS_TRAIN_PERMISSIONS, TRAIN_PERMISSIONS); // the tests run train.ts so too
});

Deno.test({
  name: "the device-select layer's adapter list is read: llvmpipe, a CPU device, is never pinned",
  ignore: await ignoredWithout("mesa-device-select"),
  fn: async () => {
    const devices = await listVulkanDevices();
    const llvmpipe = devices.find((d) => d.name.startsWith("llvmpipe"));
    assert.ok(llvmpipe, JSON.stringify(devices));
    assert.equal(llvmpipe.type, "CPU");
    assert.match(llvmpipe.vendor, /^[0-9a-f]+$/);
  },
});
