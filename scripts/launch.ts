/**
 * `deno task launch`: the torchrun of this library. Starts `--nproc-per-node`
 * training processes on this host (one per GPU), each a `deno task train`
 * with the flags after `--`, and looks after them (see `lib/launch/agent.ts`).
 *
 * @module
 */

import { randomBytes } from "node:crypto";
import { numberFlag, parseFlags, runCli } from "../lib/cli/cli.ts";
import { UsageError } from "../lib/errors.ts";
import { DEFAULT_MASTER_PORT } from "../lib/collective/tcp/launch_env.ts";
import { launch } from "../lib/launch/agent.ts";
import { gpusToPin, listVulkanDevices, pinEnvironment, sharedGpus } from "../lib/launch/devices.ts";

/** The permissions of `deno task train` (deno.json), which every process runs with. */
export const TRAIN_PERMISSIONS: readonly string[] = [
  "--unstable-bundle", // an elastic run bundles the browser member's code (Deno.bundle)
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-env",
  "--allow-sys=systemMemoryInfo",
  "--allow-ffi",
];

const HELP = `Start the processes of a training job on this host, as torchrun does: each a
\`deno task train\` with the flags after --, told its place in the job (RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and the job's token (DDP_TOKEN: never printed).

Usage: deno task launch --nproc-per-node N [options] -- [train flags]

  --nproc-per-node N  processes on this host (one per GPU; each runs --workers replicas)
  --nnodes M          hosts in the job (default 1); start one launcher per host
  --node-rank R       this host's rank (default 0; host 0 runs rank 0)
  --master-addr HOST  host 0's address (default 127.0.0.1; needed with --nnodes)
  --master-port P     rank 0's port (default: a free port with one host, else ${DEFAULT_MASTER_PORT})
  --token-file FILE   the job's shared secret, the same on every host (or DDP_TOKEN);
                      with one host and none given, a fresh one
  --max-restarts K    when a process fails, stop the others and start them all again,
                      at most K times (default 0); with --checkpoint-dir they resume
  --no-pin            do not pin local ranks to GPUs (default: one GPU each, through
                      Mesa's Vulkan device-select layer, when there are several)
  -h, --help          show this help

Every line a process prints starts with [rank R]. Ctrl-C or SIGTERM is passed to every
process (they checkpoint at the step they agree on and stop); the launcher exits with the
worst status of its processes.`;

/** Train flags the launcher sets itself. */
const OWN = ["--nnodes", "--node-rank", "--master-addr", "--master-port", "--token-file"];

async function main(): Promise<void> {
  const split = Deno.args.indexOf("--");
  const own = split < 0 ? Deno.args : Deno.args.slice(0, split);
  const trainFlags = split < 0 ? [] : Deno.args.slice(split + 1);
  const { values } = parseFlags({
    args: own,
    options: {
      "nproc-per-node": { type: "string" },
      nnodes: { type: "string" },
      "node-rank": { type: "string" },
      "master-addr": { type: "string" },
      "master-port": { type: "string" },
      "token-file": { type: "string" },
      "max-restarts": { type: "string" },
      "no-pin": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(HELP);
    return;
  }
  const count = (flag: string, value: string | undefined, min: number, fallback?: number) => {
    const number = numberFlag(flag, value, { integer: true }) ?? fallback;
    if (number === undefined) throw new UsageError(`${flag} is needed (see --help)`);
    if (number < min) throw new UsageError(`${flag} must be at least ${min}, got ${number}`);
    return number;
  };
  const nprocPerNode = count("--nproc-per-node", values["nproc-per-node"], 1);
  const nnodes = count("--nnodes", values.nnodes, 1, 1);
  const nodeRank = count("--node-rank", values["node-rank"], 0, 0);
  if (nodeRank >= nnodes) {
    throw new UsageError(`--node-rank must be below --nnodes (${nnodes}), got ${nodeRank}`);
  }
  const maxRestarts = count("--max-restarts", values["max-restarts"], 0, 0);
  if (nnodes > 1 && values["master-addr"] === undefined) {
    throw new UsageError("--nnodes needs --master-addr: host 0's address, the same on every host");
  }
  const masterPort = values["master-port"] === undefined
    ? (nnodes > 1 ? DEFAULT_MASTER_PORT : undefined)
    : count("--master-port", values["master-port"], 1);
  if (masterPort !== undefined && masterPort > 65535) {
    throw new UsageError(`--master-port must be a port number, got ${masterPort}`);
  }
  const clash = trainFlags.find((flag) => OWN.includes(flag.split("=")[0])) ??
    trainFlags.join(" ").match(/--allreduce[= ]mpi\b/)?.[0];
  if (clash) {
    throw new UsageError(
      `${clash} does not go after --: the launcher gives every process its place in the job`,
    );
  }
  const token = await jobToken({ file: values["token-file"], hosts: nnodes });
  const devices = values["no-pin"] ? [] : gpusToPin(await listVulkanDevices());
  for (const line of sharedGpus(devices, nprocPerNode)) console.error(`warning: ${line}`);
  if (devices.length > 0) {
    console.error(
      `launch: ${devices.length} GPUs: ` +
        Array.from({ length: nprocPerNode }, (_, r) => {
          const gpu = devices[r % devices.length];
          return `local rank ${r} → GPU ${gpu.index} (${gpu.name}${gpu.pci ? `, ${gpu.pci}` : ""})`;
        }).join("; "),
    );
  }
  // With checkpoints, a restarted group continues from the newest one.
  const checkpoints = trainFlags.some((flag) => /^--checkpoint-dir(=|$)/.test(flag));
  const resumes = trainFlags.some((flag) => /^--resume(=|$)/.test(flag));
  const train = new URL("./train.ts", import.meta.url);
  const env = Deno.env.toObject();
  for (const name of Object.keys(env)) {
    // Another launcher's places would contradict the ones given here.
    if (/^(RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|GROUP_RANK|DDP_TOKEN)$/.test(name)) {
      delete env[name];
    }
  }
  const status = await launch({
    nprocPerNode,
    nnodes,
    nodeRank,
    masterAddr: values["master-addr"] ?? "127.0.0.1",
    masterPort,
    maxRestarts,
    token,
    env,
    envOf: (localRank) => pinEnvironment(devices, localRank),
    command: (attempt) => ({
      program: Deno.execPath(),
      args: [
        "run",
        ...TRAIN_PERMISSIONS,
        train.href,
        ...trainFlags,
        ...(attempt > 0 && checkpoints && !resumes ? ["--resume"] : []),
      ],
    }),
  }, {
    stdout: (line) => console.log(line),
    stderr: (line) => console.error(line),
  }, {
    subscribe(forward) {
      const listeners = (["SIGINT", "SIGTERM"] as const).map((signal) => {
        const listener = () => forward(signal);
        Deno.addSignalListener(signal, listener);
        return () => Deno.removeSignalListener(signal, listener);
      });
      return () => listeners.forEach((remove) => remove());
    },
  });
  Deno.exit(status);
}

/** The job's token: the file's, else DDP_TOKEN, else (one host only) a fresh one. */
async function jobToken(given: { file?: string; hosts: number }): Promise<string> {
  if (given.file !== undefined) {
    const text = await Deno.readTextFile(given.file).catch((error) => {
      throw new UsageError(`--token-file ${given.file}: ${error.message}`);
    });
    return text.trim();
  }
  const variable = Deno.env.get("DDP_TOKEN");
  if (variable) return variable;
  if (given.hosts > 1) {
    throw new UsageError(
      "--nnodes needs the job's token on every host: --token-file FILE or DDP_TOKEN",
    );
  }
  return randomBytes(32).toString("hex");
}

if (import.meta.main) await runCli(main);
