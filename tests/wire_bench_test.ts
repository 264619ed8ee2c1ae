/**
 * The wire bench's Open MPI rows on the namespaces' cables: Open MPI's group
 * averages between the lab's hosts, and when it cannot start there, the
 * TCP rows are still measured and the reason is given once. Needs root and
 * Open MPI; ignored, and reported so, without them.
 */

import assert from "node:assert/strict";
import { benchWire } from "../lib/bench/wire_bench.ts";
import { ignoredWithout } from "./skips.ts";

const ignore = await ignoredWithout("network-namespaces") || await ignoredWithout("open-mpi");
const TINY = [{ model: "tiny", length: 65_536 }, { model: "tiny again", length: 4_096 }];

Deno.test({
  name: "wire bench: Open MPI's group averages between the lab's namespaces",
  ignore,
  async fn() {
    const failures: string[] = [];
    const results = await benchWire({
      links: [{ gbps: 1, hosts: [2] }],
      models: TINY.slice(0, 1),
      wires: ["float32", "mpi"],
      repeats: 2,
      onMpiFailure: (why) => failures.push(why),
    });
    assert.deepEqual(failures, []);
    assert.deepEqual(results.map((r) => r.wire), ["float32", "mpi"]);
    // Over a 1 Gbit/s cable, not shared memory: no faster than the wire allows.
    const mpi = results[1];
    assert.ok(
      mpi.ms.min >= 0.9 * mpi.boundMs,
      `${mpi.ms.min} ms against a bound of ${mpi.boundMs}`,
    );
  },
});

Deno.test({
  name:
    "wire bench: when Open MPI cannot start on the lab, its rows are left out, the reason given once",
  ignore,
  async fn() {
    // A launch agent that cannot enter a host: `unshare` fails.
    const bin = await Deno.makeTempDir();
    await Deno.writeTextFile(`${bin}/unshare`, "#!/bin/sh\necho 'unshare: refused' >&2\nexit 1\n", {
      mode: 0o755,
    });
    const path = Deno.env.get("PATH") ?? "";
    Deno.env.set("PATH", `${bin}:${path}`);
    try {
      const failures: string[] = [];
      const results = await benchWire({
        links: [{ gbps: 1, hosts: [2] }],
        models: TINY,
        wires: ["float32", "mpi"],
        repeats: 2,
        onMpiFailure: (why) => failures.push(why),
      });
      assert.deepEqual(failures, ["mpirun exited with status 1: unshare: refused"]);
      assert.deepEqual(results.map((r) => `${r.model} ${r.wire}`), [
        "tiny float32",
        "tiny again float32",
      ]);
      await assert.rejects(
        benchWire({ links: [{ gbps: 1, hosts: [2] }], models: TINY, wires: ["mpi"], repeats: 1 }),
        /^Error: mpirun exited with status 1: unshare: refused$/,
      );
    } finally {
      Deno.env.set("PATH", path);
      await Deno.remove(bin, { recursive: true });
    }
  },
});
