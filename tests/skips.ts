/**
 * Every reason a test may not run here, in one table. A test that needs one
 * of these is registered with `ignore: await ignoredWithout("name")`, so that
 * Deno reports it as ignored — never as a pass — and the reason is printed
 * once. No test returns early instead.
 *
 * @module
 */

import { DATA_DIR } from "./helpers.ts";
import { isSoftwareAdapter } from "../lib/train/shared/backend.ts";
import { SIMD_AVAILABLE } from "../lib/optim/_simd.ts";

/** What a test may need, why, and how to tell whether this machine has it. */
const NEEDS = {
  "fashion-mnist": {
    reason: "the real Fashion-MNIST files: put them in ../shared/data/fashion-mnist, or set " +
      "FASHION_MNIST_DIR",
    available: () => Promise.resolve(DATA_DIR !== undefined),
  },
  "network-namespaces": {
    reason: "network namespaces (`ip netns`), which need root",
    available: async () => {
      const probe = "ddp-test-probe";
      const ip = (...args: string[]) =>
        new Deno.Command("ip", { args, stdout: "null", stderr: "null" }).output()
          .then((r) => r.success, () => false);
      const added = await ip("netns", "add", probe);
      if (added) await ip("netns", "del", probe);
      return added;
    },
  },
  "tmpfs": {
    reason: "mounting a small tmpfs (to fill a disk), which needs root",
    available: async () => {
      const dir = await Deno.makeTempDir();
      const run = (command: string, args: string[]) =>
        new Deno.Command(command, { args, stdout: "null", stderr: "null" }).output()
          .then((r) => r.success, () => false);
      const mounted = await run("mount", ["-t", "tmpfs", "-o", "size=16k", "tmpfs", dir]);
      if (mounted) await run("umount", [dir]);
      await Deno.remove(dir);
      return mounted;
    },
  },
  "gnu-time": {
    reason: "GNU time (/usr/bin/time, Debian's `time` package) to measure a process's peak memory",
    available: () =>
      new Deno.Command("/usr/bin/time", {
        args: ["-f", "%M", "true"],
        stdout: "null",
        stderr: "null",
      })
        .output().then((r) => r.success, () => false),
  },
  "linux": {
    reason: "Linux (the thread watch reads /proc/self/task)",
    available: () => Promise.resolve(Deno.build.os === "linux"),
  },
  "llvmpipe-through-gl": {
    reason: "Mesa's llvmpipe reachable through GL (the warning it tests is about that path)",
    available: async () => (await adapterOn("gl"))?.includes("llvmpipe") ?? false,
  },
  "two-cores-software-adapter": {
    reason: "2 or more CPU cores and a software WebGPU adapter (the speed-up measured is that of " +
      "llvmpipe's workers side by side)",
    available: async () => {
      const adapter = await adapterOn("vulkan") ?? await adapterOn("gl");
      return navigator.hardwareConcurrency >= 2 && isSoftwareAdapter(adapter ?? "");
    },
  },
  "software-adapter": {
    reason:
      "a software WebGPU adapter (the note it tests is printed only where workers share CPU " +
      "cores)",
    available: async () =>
      isSoftwareAdapter(await adapterOn("vulkan") ?? await adapterOn("gl") ?? ""),
  },
  "timestamp-query": {
    reason: "a WebGPU adapter with the timestamp-query feature (Vulkan lavapipe has it), to time " +
      "kernels",
    available: async () =>
      (await adapterOn("vulkan", "features.has('timestamp-query')")) === "true",
  },
  "wasm-simd": {
    reason: "WebAssembly SIMD (the optimizers' fast loops, compared here with the scalar ones)",
    available: () => Promise.resolve(SIMD_AVAILABLE),
  },
  "llvmpipe-15": {
    reason: "the adapter the WebGPU golden checksum was pinned on, llvmpipe (LLVM 15.0.6, 256 " +
      "bits) through Vulkan (another adapter rounds differently)",
    available: async () => (await adapterOn("vulkan")) === "llvmpipe (LLVM 15.0.6, 256 bits)",
  },
  "mesa-device-select": {
    reason: "Mesa's Vulkan device-select layer with llvmpipe (Debian's mesa-vulkan-drivers), " +
      "whose adapter list the launcher reads",
    available: async () =>
      (await Deno.stat("/usr/share/vulkan/implicit_layer.d/VkLayer_MESA_device_select.json")
        .then(() => true, () => false)) &&
      ((await adapterOn("vulkan"))?.includes("llvmpipe") ?? false),
  },
  "chromium": {
    reason: "a real browser, Debian's chromium-headless-shell (.ci/setup.sh installs it)",
    available: () =>
      new Deno.Command("chromium-headless-shell", {
        args: ["--version"],
        stdout: "null",
        stderr: "null",
      }).output().then((r) => r.success, () => false),
  },
  "open-mpi": {
    reason: "Open MPI (`mpirun` and libmpi.so.40: Debian's openmpi-bin and libopenmpi-dev; " +
      ".ci/setup.sh installs them)",
    available: async () => {
      const { success, stdout } = await new Deno.Command("mpirun", {
        args: ["--version"],
        stdout: "piped",
        stderr: "null",
      }).output().catch(() => ({ success: false, stdout: new Uint8Array() }));
      return success && new TextDecoder().decode(stdout).includes("Open MPI");
    },
  },
} as const;

/** The names of {@linkcode NEEDS}. */
export type Need = keyof typeof NEEDS;

const answers = new Map<Need, Promise<boolean>>();

/**
 * Whether a test that needs `need` must be ignored on this machine (it is
 * available: false); the first time, the reason is printed.
 */
export function ignoredWithout(need: Need): Promise<boolean> {
  let answer = answers.get(need);
  if (answer === undefined) {
    answer = NEEDS[need].available().then((available) => {
      if (!available) console.warn(`\n*** tests that need ${NEEDS[need].reason} are ignored ***\n`);
      return !available;
    });
    answers.set(need, answer);
  }
  return answer;
}

/**
 * `what` of the adapter WebGPU finds through `path` (`gl`, `vulkan`) — by
 * default its description — asked in a process of its own.
 */
async function adapterOn(path: string, what = "info.description"): Promise<string | undefined> {
  const { success, stdout } = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `const a = await navigator.gpu?.requestAdapter(); console.log(a?.${what} ?? '');`,
    ],
    env: { DENO_WEBGPU_BACKEND: path, XDG_RUNTIME_DIR: "/nonexistent" },
    stdout: "piped",
    stderr: "null",
  }).output();
  const description = new TextDecoder().decode(stdout).trim();
  return success && description !== "" ? description : undefined;
}
