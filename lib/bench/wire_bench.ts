/**
 * The TCP process group on real link speeds: "hosts" are network namespaces
 * joined by virtual Ethernet cables whose every direction is shaped with a
 * token bucket (`tc tbf`) to a rate (1 or 10 Gbit/s); each host runs
 * one process of the group (`scripts/wire_member.ts`), which times averages
 * of a model-sized vector. Two hosts share one cable; more hang off a bridge
 * in a "switch" namespace, each on its own shaped cable.
 *
 * The figure to beat is the wire bound: the bytes the busiest cable carries
 * one way in one average, over its rate. The direct schedule (every process
 * one replica) sends each host `4·L·(n−1)/n` bytes of its vector's blocks and
 * `4·L/n·(n−1)` of its reduced block: `8·L·(n−1)/n` bytes out per host.
 *
 * No delay is added: the kernels this was written on lack `sch_netem`, and
 * a veth cable's own latency is a few microseconds. Needs root (namespaces,
 * `tc`); `benchWire` rejects with the reason where it cannot create them.
 *
 * @module
 */

import { summarize, type Summary } from "./stats.ts";
import { startMpiGroup } from "./all_reduce_bench.ts";
import { table } from "./report.ts";
import { spread } from "./report.ts";

/**
 * How an average travels: the TCP group with float32 or bfloat16 values,
 * plain sockets moving the float32 average's bytes, or Open MPI's group
 * (float32, over its TCP transport).
 */
export type WireKind = "float32" | "bf16" | "sockets" | "mpi";

/** One configuration: link rate, hosts, vector. */
export interface WireBenchResult {
  /** Link rate, Gbit/s (10⁹ bits per second), each direction. */
  gbps: number;
  /** Hosts (processes, one replica each). */
  hosts: number;
  /** What the vector is, e.g. `"NiN"`. */
  model: string;
  /**
   * How it travels: float32, or bfloat16 (`--wire bf16`); `sockets`: the
   * float32 average's bytes over plain connections, no group (see
   * `scripts/wire_member.ts`), to compare; `mpi`: Open MPI's group.
   */
  wire: WireKind;
  /** Float32 elements. */
  length: number;
  /** Bytes the busiest cable carries one way per average, as float32 (bfloat16: half). */
  busiestBytes: number;
  /** The wire bound: `busiestBytes` at the link rate, ms. */
  boundMs: number;
  /** Measured ms per average (rank 0's). */
  ms: Summary;
  /** `boundMs / ms.median`: the share of the wire's speed reached. */
  ofBound: number;
}

/**
 * Bytes on the busiest cable, one way, for one average of `length` float32
 * values among `hosts` processes with the direct schedule, and the time the
 * wire needs for them at `gbps`.
 *
 * @example NiN between 2 hosts at 10 Gbit/s: 6.4 ms
 * ```ts
 * import assert from "node:assert/strict";
 * import { wireBound } from "./wire_bench.ts";
 *
 * const { busiestBytes, boundMs } = wireBound({ hosts: 2, length: 1_992_166, gbps: 10 });
 * assert.equal(busiestBytes, 7_968_664);
 * assert.equal(boundMs.toFixed(2), "6.37");
 * ```
 */
export function wireBound(
  options: { hosts: number; length: number; gbps: number },
): { busiestBytes: number; boundMs: number } {
  const { hosts, length, gbps } = options;
  const busiestBytes = Math.round((8 * length * (hosts - 1)) / hosts);
  return { busiestBytes, boundMs: (busiestBytes * 8) / (gbps * 1e9) * 1000 };
}

/** Runs `ip` with `args`; throws with its message when it fails. */
async function ip(...args: string[]): Promise<void> {
  await run("ip", args);
}

async function run(command: string, args: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command(command, {
    args,
    stdout: "null",
    stderr: "piped",
  })
    .output();
  if (!success) {
    throw new Error(`${command} ${args.join(" ")}: ${new TextDecoder().decode(stderr).trim()}`);
  }
}

const PREFIX = "ddp-wire";

/** Hosts as network namespaces on shaped cables; `close()` removes them. */
export class WireLab {
  /** Each host's namespace. */
  readonly namespaces: string[];
  /** Each host's address. */
  readonly addresses: string[];

  private constructor(hosts: number) {
    this.namespaces = Array.from({ length: hosts }, (_, h) => `${PREFIX}-h${h}`);
    this.addresses = Array.from({ length: hosts }, (_, h) => `10.214.0.${h + 1}`);
  }

  /**
   * Creates `hosts` namespaces joined by cables shaped to `gbps` each way;
   * rejects (having removed what it made) when it cannot.
   */
  static async create(options: { hosts: number; gbps: number }): Promise<WireLab> {
    const lab = new WireLab(options.hosts);
    await WireLab.removeAll(options.hosts);
    try {
      await lab.#build(options);
      return lab;
    } catch (error) {
      await lab.close();
      throw error;
    }
  }

  /** Removes namespaces this class may have left (a run that was killed). */
  static async removeAll(hosts: number): Promise<void> {
    const names = [...Array.from({ length: hosts }, (_, h) => `${PREFIX}-h${h}`), `${PREFIX}-sw`];
    for (const ns of names) await ip("netns", "del", ns).catch(() => {});
  }

  async #build(options: { hosts: number; gbps: number }): Promise<void> {
    const { hosts, gbps } = options;
    for (const ns of this.namespaces) {
      await ip("netns", "add", ns);
      await ip("-n", ns, "link", "set", "lo", "up");
    }
    // A bucket of 2 ms at the rate (at least 256 KiB: veth hands over 64 KiB segments), and
    // room for 20 ms of queue.
    const burst = Math.max(256 * 1024, Math.round((gbps * 1e9) / 8 * 0.002));
    const shape = (ns: string, dev: string) =>
      run("ip", [
        "netns",
        "exec",
        ns,
        "tc",
        "qdisc",
        "add",
        "dev",
        dev,
        "root",
        "tbf",
        "rate",
        `${gbps}gbit`,
        "burst",
        String(burst),
        "latency",
        "20ms",
      ]);
    const hostEnd = (h: number) => `${PREFIX}-${h}`;
    if (hosts === 2) {
      const [a, b] = this.namespaces;
      await ip(
        "link",
        "add",
        hostEnd(0),
        "netns",
        a,
        "type",
        "veth",
        "peer",
        "name",
        hostEnd(1),
        "netns",
        b,
      );
    } else {
      const sw = `${PREFIX}-sw`;
      await ip("netns", "add", sw);
      await ip("-n", sw, "link", "add", "br0", "type", "bridge");
      await ip("-n", sw, "link", "set", "br0", "up");
      for (let h = 0; h < hosts; h++) {
        const port = `${PREFIX}-p${h}`;
        await ip(
          "link",
          "add",
          hostEnd(h),
          "netns",
          this.namespaces[h],
          "type",
          "veth",
          "peer",
          "name",
          port,
          "netns",
          sw,
        );
        await ip("-n", sw, "link", "set", port, "master", "br0");
        await ip("-n", sw, "link", "set", port, "up");
        await shape(sw, port); // switch → host
      }
    }
    for (let h = 0; h < hosts; h++) {
      const ns = this.namespaces[h];
      await ip("-n", ns, "addr", "add", `${this.addresses[h]}/24`, "dev", hostEnd(h));
      await ip("-n", ns, "link", "set", hostEnd(h), "up");
      await shape(ns, hostEnd(h)); // host → cable
    }
  }

  /** Removes the namespaces (their cables go with them). */
  async close(): Promise<void> {
    await WireLab.removeAll(this.namespaces.length);
  }

  /**
   * How to start `mpirun` with one process per host: in the first host's
   * namespace, reaching the others through a launch agent written into
   * `dir` (in place of `ssh`: it runs Open MPI's daemon in the namespace of
   * the host it is given, under that host's own name), and only over the
   * lab's cables (its TCP transport, no shared memory).
   */
  async mpiLaunch(dir: string): Promise<{ prefix: string[]; args: string[] }> {
    const agent = `${dir}/netns_agent.sh`;
    const cases = this.addresses.map((address, h) => `  ${address}) ns=${this.namespaces[h]} ;;`);
    await Deno.writeTextFile(
      agent,
      [
        "#!/bin/sh",
        "# mpirun's launch agent for the wire lab: ssh's arguments, a namespace for a host.",
        'while [ "${1#-}" != "$1" ]; do shift; done',
        "host=$1; shift",
        'case "$host" in',
        ...cases,
        '  *) echo "no namespace for host $host" >&2; exit 1 ;;',
        "esac",
        'exec ip netns exec "$ns" unshare --uts sh -c "hostname $ns; $*"',
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
    const subnet = `${this.addresses[0].split(".").slice(0, 3).join(".")}.0/24`;
    return {
      prefix: ["ip", "netns", "exec", this.namespaces[0]],
      args: [
        "--host",
        this.addresses.map((address) => `${address}:1`).join(","),
        ...["--mca", "plm_rsh_agent", agent],
        ...["--mca", "pml", "ob1"],
        ...["--mca", "btl", "self,tcp"],
        ...["--mca", "btl_tcp_if_include", subnet],
        ...["--mca", "oob_tcp_if_include", subnet],
      ],
    };
  }
}

/** What one member prints on its last line (rank 0): ms per average, per repetition. */
interface MemberReport {
  msPerAverage: number[];
}

/**
 * Runs the group once on a fresh lab and returns rank 0's timings: `repeats`
 * repetitions of `ops` averages after one untimed average.
 */
async function measure(
  lab: WireLab,
  options: {
    length: number;
    ops: number;
    repeats: number;
    port: number;
    wire: WireKind;
  },
): Promise<number[]> {
  if (options.wire === "mpi") return await measureMpi(lab, options);
  const hosts = lab.namespaces.length;
  const member = new URL("../../scripts/wire_member.ts", import.meta.url);
  const token = crypto.randomUUID();
  const children = lab.namespaces.map((ns, rank) =>
    new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        ns,
        Deno.execPath(),
        "run",
        "-A",
        member.pathname,
        `--rank=${rank}`,
        `--size=${hosts}`,
        `--addr=${lab.addresses[0]}`,
        `--port=${options.port}`,
        `--length=${options.length}`,
        `--ops=${options.ops}`,
        `--repeats=${options.repeats}`,
        ...(options.wire === "bf16" ? ["--bf16"] : []),
        ...(options.wire === "sockets" ? ["--sockets", `--addrs=${lab.addresses.join(",")}`] : []),
      ],
      env: { DDP_TOKEN: token, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output()
  );
  const outputs = await Promise.all(children);
  const failed = outputs.findIndex((o) => !o.success);
  if (failed >= 0) {
    const why = new TextDecoder().decode(outputs[failed].stderr).trim().split("\n").at(-1);
    throw new Error(`wire member ${failed} failed: ${why}`);
  }
  const last = new TextDecoder().decode(outputs[0].stdout).trim().split("\n").at(-1)!;
  return (JSON.parse(last) as MemberReport).msPerAverage;
}

/**
 * As {@linkcode measure}, through Open MPI's group: `mpirun` with one process
 * per host (`scripts/mpi_member.ts`), each averaging one replica's vector.
 */
async function measureMpi(
  lab: WireLab,
  options: { length: number; ops: number; repeats: number },
): Promise<number[]> {
  const dir = await Deno.makeTempDir({ prefix: "ddp-wire-mpi-" });
  try {
    const group = await startMpiGroup({
      worldSize: lab.namespaces.length,
      length: options.length,
      ops: options.ops,
      launch: await lab.mpiLaunch(dir),
    });
    try {
      await group.repeat(); // warm-up, untimed
      const times: number[] = [];
      for (let r = 0; r < options.repeats; r++) times.push((await group.repeat()) / options.ops);
      return times;
    } finally {
      await group.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Measures the TCP group's average of each of `models` among each of
 * `hosts` on links of each of `links`; each configuration on a lab of its
 * own. Rejects with the reason when namespaces cannot be made (not root).
 */
export async function benchWire(options: {
  links: readonly { gbps: number; hosts: readonly number[] }[];
  models: readonly { model: string; length: number }[];
  /** Wire formats to measure each configuration with. Default float32 only. */
  wires?: readonly WireKind[];
  repeats: number;
  onResult?: (result: WireBenchResult) => void;
  /**
   * Called once if Open MPI's group fails on the lab (the `mpi` rows are
   * then left out, the others measured); without it the failure rejects.
   */
  onMpiFailure?: (reason: string) => void;
}): Promise<WireBenchResult[]> {
  const results: WireBenchResult[] = [];
  let mpiFailed = false;
  for (const { gbps, hosts: hostCounts } of options.links) {
    for (const hosts of hostCounts) {
      const lab = await WireLab.create({ hosts, gbps });
      try {
        for (const { model, length } of options.models) {
          for (const wire of options.wires ?? ["float32"]) {
            if (wire === "mpi" && mpiFailed) continue;
            const { busiestBytes, boundMs } = wireBound({ hosts, length, gbps });
            // Enough averages for about 1 s of wire time per repetition, at least 2.
            const ops = Math.max(2, Math.min(50, Math.round(1000 / boundMs)));
            const config = { length, ops, repeats: options.repeats, port: 29_600, wire };
            let times: number[];
            try {
              times = await measure(lab, config);
            } catch (error) {
              if (wire !== "mpi" || options.onMpiFailure === undefined) throw error;
              mpiFailed = true;
              options.onMpiFailure(error instanceof Error ? error.message : String(error));
              continue;
            }
            const ms = summarize(times);
            const result = {
              gbps,
              hosts,
              model,
              wire,
              length,
              busiestBytes,
              boundMs,
              ms,
              ofBound: boundMs / ms.median,
            };
            results.push(result);
            options.onResult?.(result);
          }
        }
      } finally {
        await lab.close();
      }
    }
  }
  return results;
}

/**
 * The wire table: per link rate, hosts and vector, the measured time
 * against the wire bound.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { wireTable } from "./wire_bench.ts";
 *
 * const ms = { median: 80, min: 78, max: 90, count: 3 };
 * const text = wireTable([{ gbps: 1, hosts: 2, model: "NiN", wire: "float32", length: 1_992_166,
 *   busiestBytes: 7_968_664, boundMs: 63.7, ms, ofBound: 63.7 / 80 }]);
 * assert.match(text, /^1 Gbit\/s +2 +NiN +float32 +7\.97 MB +63\.7 +80\.0 \(78\.0–90\.0\) +80%$/m);
 * ```
 */
export function wireTable(results: readonly WireBenchResult[]): string {
  const rows = [[
    "link",
    "hosts",
    "vector",
    "wire",
    "busiest link (float32)",
    "bound ms",
    "ms (min–max)",
    "of bound",
  ]];
  for (const r of results) {
    rows.push([
      `${r.gbps} Gbit/s`,
      String(r.hosts),
      r.model,
      r.wire,
      `${(r.busiestBytes / 1e6).toFixed(2)} MB`,
      r.boundMs.toFixed(1),
      spread(r.ms, 1),
      `${Math.round(100 * r.ofBound)}%`,
    ]);
  }
  return table(rows);
}
