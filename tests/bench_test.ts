import assert from "node:assert/strict";
import { runScript, withTempDir } from "./helpers.ts";
import { ignoredWithout } from "./skips.ts";

/** Whether the all-reduce table has its mpi rows here (they need Open MPI). */
const withMpi = !(await ignoredWithout("open-mpi"));

const runBench = (args: string[], env?: Record<string, string>) =>
  runScript("scripts/bench.ts", args, {
    env,
    permissions: [
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys",
      "--allow-run=lscpu,git,ip,mpirun", // as deno task bench: ip for the wire section
      "--allow-net=127.0.0.1",
      "--allow-ffi", // ThreadWatch: the worker threads seen to end before the bench exits
    ],
  });

Deno.test("deno task bench --smoke prints the three tables and writes every figure as JSON", async () => {
  await withTempDir(async (dir) => {
    // XDG_RUNTIME_DIR empty, as on many servers: Mesa's Vulkan driver would print an error.
    const { code, stdout, stderr } = await runBench(["--smoke", "--json", `${dir}/bench.json`], {
      XDG_RUNTIME_DIR: "",
    });
    assert.equal(code, 0, stderr);
    assert.doesNotMatch(stderr, /XDG_RUNTIME_DIR/);
    assert.match(
      stdout,
      /^machine: .*; webgpu on .+ through (Vulkan|GL|Metal|Direct3D 12) \((software|hardware) adapter\); commit ([0-9a-f]{7,}(-dirty)?|unknown), \d{4}-\d\d-\d\d$/m,
    );
    for (
      const heading of [
        "machine:",
        "Scaling:",
        "All-reduce:",
        "Overhead:",
        "Optimizer:",
        "Batch sweep",
        "Kernels:",
        "Wire:",
        "Elastic:",
        "Goals:",
      ]
    ) {
      assert.ok(stdout.includes(heading), `missing ${heading}`);
    }
    const report = JSON.parse(await Deno.readTextFile(`${dir}/bench.json`));
    assert.equal(typeof report.machine.cores, "number");
    assert.match(report.machine.commit, /^([0-9a-f]{7,}(-dirty)?|unknown)$/);
    assert.equal(report.machine.device.backend, "webgpu");
    assert.deepEqual(report.scaling.map((r: { workers: number }) => r.workers), [1, 2]);
    assert.deepEqual(
      report.optimizer.map((r: { optimizer: string; workers: number; loop: string }) =>
        `${r.optimizer} ${r.workers} ${r.loop}`
      ),
      [1, 2].flatMap((workers) =>
        ["SGD", "SGD + momentum", "Adam"].flatMap((name) =>
          ["scalar", "simd"].map((loop) => `${name} ${workers} ${loop}`)
        )
      ),
    );
    assert.ok(report.optimizer.every((r: { ms: { count: number } }) => r.ms.count === 2));
    for (const row of report.scaling) {
      assert.ok(row.imagesPerSec.median > 0 && row.imagesPerSec.count === 2);
      assert.ok(row.imagesPerSec.min <= row.imagesPerSec.median);
      assert.ok(row.breakdown.computeMs > 0);
    }
    assert.equal(report.scaling[0].speedup, 1);
    const kinds = report.allReduce.map((r: { kind: string; bytes: number }) =>
      `${r.kind} ${r.bytes}`
    );
    assert.deepEqual(
      kinds,
      [4096, 65536].flatMap((bytes) =>
        [
          "copy",
          "move",
          "shared",
          "shared-scalar",
          "star",
          "tcp",
          "tcp-chain",
          ...(withMpi ? ["mpi"] : []),
        ]
          .map((k) => `${k} ${bytes}`)
      ),
    );
    for (const row of report.allReduce) {
      assert.ok(row.ms.median > 0);
      assert.ok(Math.abs(row.algbwGBps - row.bytes / (row.ms.median * 1e6)) < 1e-9);
    }
    assert.ok(report.overhead.ratio > 0);
    assert.deepEqual(report.batchSweep.points.map((p: { batch: number }) => p.batch), [1, 2]);
    assert.equal(typeof report.batchSweep.fixedMs, "number");
    // Every NiN convolution, forward, dX (but the first layer's) and dW, tfjs's and fast.
    assert.equal(report.kernels.results.length, 2 * (12 * 3 - 1));
    for (const row of report.kernels.results) {
      assert.ok(row.gflops > 0 && row.matMulGflops > 0, JSON.stringify(row));
    }
    assert.ok(report.kernels.stepSpeedup > 0);
    // Elastic: both transports timed; four phases, the joined members' shards counted.
    for (const path of ["websocket", "tcp"]) {
      assert.ok(
        report.elastic.transport[path].median > 0 && report.elastic.transport[path].count === 2,
      );
    }
    assert.deepEqual(
      report.elastic.phases.map((p: { members: string }) => p.members),
      [
        "worker 0 alone",
        "worker 0 + a member of its speed",
        "worker 0 + a member 4× slower",
        "worker 0 alone, again",
      ],
    );
    for (const phase of report.elastic.phases) assert.ok(phase.stepMs.median > 0);
    assert.ok(report.elastic.phases[1].joined.shards > 0, "the joined member computed shards");
    // Wire (root only: it makes network namespaces): float32, bf16 and plain sockets.
    if (Deno.uid() === 0) {
      assert.deepEqual(
        report.wire.map((r: { wire: string }) => r.wire),
        ["float32", "bf16", "sockets", ...(withMpi ? ["mpi"] : [])],
      );
      for (const row of report.wire) assert.ok(row.ms.median > 0 && row.ofBound > 0);
    } else assert.equal(typeof report.wire.skipped, "string");
    assert.equal(report.goals.length, 12);
  });
});

Deno.test("deno task bench rejects bad flags with one line and exit code 2", async () => {
  for (
    const [args, pattern] of [
      [["--sizes", "3"], /--sizes takes byte counts divisible by 4/],
      [["--workers", "0"], /--workers must be a positive integer/],
      [["--only", "speed"], /--only must be one of scaling, allreduce, overhead, batch/],
      [
        ["--json", "/nonexistent/dir/b.json"],
        /--json \/nonexistent\/dir\/b\.json: directory \/nonexistent\/dir does not exist/,
      ],
    ] as const
  ) {
    const { code, stderr } = await runBench([...args]);
    assert.equal(code, 2, stderr);
    assert.equal(stderr.trimEnd().split("\n").length, 1, stderr);
    assert.match(stderr, pattern);
  }
});
