/**
 * One GPU per local rank. Deno's WebGPU has no adapter enumeration (every
 * process gets the adapter wgpu picks first), so the launcher pins a process
 * to a device through what Linux's Vulkan stack offers: Mesa's device-select
 * layer (`VK_LAYER_MESA_device_select`, in Debian's `mesa-vulkan-drivers`),
 * an implicit layer that puts the chosen device first for every Vulkan
 * driver. It reads `DRI_PRIME=pci-DDDD_BB_DD_F` (a PCI address: tells
 * identical GPUs apart) and `MESA_VK_DEVICE_SELECT=vid:did`, and with
 * `MESA_VK_DEVICE_SELECT=list` prints the devices and exits — the adapter
 * list this module parses.
 *
 * Tried here on Mesa 22.3's layer with llvmpipe only (one device: nothing to
 * pin); on a host with several GPUs it depends on that layer being installed.
 *
 * @module
 */

/** A Vulkan device as the device-select layer lists it. */
export interface VulkanDevice {
  /** Its index in the list. */
  index: number;
  /** PCI vendor id, hex (e.g. `"10de"`). */
  vendor: string;
  /** PCI device id, hex. */
  device: string;
  /** Its name (e.g. `"NVIDIA H100 80GB HBM3"`). */
  name: string;
  /** `"discrete GPU"`, `"integrated GPU"`, `"CPU"`, … as the layer says. */
  type: string;
  /** Its PCI address (`"0000:01:00.0"`), when the layer gives one. */
  pci?: string;
}

/**
 * The devices in the device-select layer's list (`MESA_VK_DEVICE_SELECT=list`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseDeviceList } from "./devices.ts";
 *
 * const list = `selectable devices:
 *   GPU 0: 10de:2330 "NVIDIA H100 80GB HBM3" discrete GPU 0000:19:00.0
 *   GPU 1: 10005:0 "llvmpipe (LLVM 15.0.6, 256 bits)" CPU`;
 * assert.deepEqual(parseDeviceList(list).map((d) => [d.vendor, d.pci ?? "none"]), [
 *   ["10de", "0000:19:00.0"],
 *   ["10005", "none"],
 * ]);
 * ```
 */
export function parseDeviceList(text: string): VulkanDevice[] {
  const devices: VulkanDevice[] = [];
  for (const line of text.split("\n")) {
    const match = line.match(
      /^\s*GPU (\d+): ([0-9a-f]+):([0-9a-f]+) "(.*)" (.+?)(?: ([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]))?\s*$/i,
    );
    if (!match) continue;
    const [, index, vendor, device, name, type, pci] = match;
    devices.push({ index: Number(index), vendor, device, name, type, pci });
  }
  return devices;
}

/**
 * The GPUs the local ranks are spread over: the devices that are not CPUs
 * (software rasterisers), when there are at least two of them; else none
 * (nothing to choose between).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gpusToPin, type VulkanDevice } from "./devices.ts";
 *
 * const gpu = (index: number): VulkanDevice =>
 *   ({ index, vendor: "1002", device: "744c", name: "AMD", type: "discrete GPU", pci: `0000:0${index}:00.0` });
 * assert.equal(gpusToPin([gpu(0), gpu(1)]).length, 2);
 * assert.equal(gpusToPin([gpu(0)]).length, 0);
 * ```
 */
export function gpusToPin(devices: readonly VulkanDevice[]): VulkanDevice[] {
  const gpus = devices.filter((d) => !/cpu/i.test(d.type));
  return gpus.length >= 2 ? gpus : [];
}

/**
 * The variables that make local rank `localRank` use `gpus[localRank mod
 * n]`: `DRI_PRIME` by PCI address where known (identical GPUs apart), else
 * `MESA_VK_DEVICE_SELECT` by vendor and device id.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pinEnvironment } from "./devices.ts";
 *
 * const gpus = [0, 1].map((index) => ({
 *   index, vendor: "10de", device: "2330", name: "H100", type: "discrete GPU", pci: `0000:${index + 19}:00.0`,
 * }));
 * assert.deepEqual(pinEnvironment(gpus, 3), { DRI_PRIME: "pci-0000_20_00_0" });
 * ```
 */
export function pinEnvironment(
  gpus: readonly VulkanDevice[],
  localRank: number,
): Record<string, string> {
  if (gpus.length === 0) return {};
  const gpu = gpus[localRank % gpus.length];
  if (gpu.pci) return { DRI_PRIME: `pci-${gpu.pci.replace(/[:.]/g, "_")}` };
  return { MESA_VK_DEVICE_SELECT: `${gpu.vendor}:${gpu.device}` };
}

/**
 * The ranks that share a GPU when there are more local ranks than GPUs, one
 * line each (e.g. `"local ranks 0 and 2 share GPU 0 (…)"`); none otherwise.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sharedGpus } from "./devices.ts";
 *
 * const gpus = [0, 1].map((index) => ({ index, vendor: "1", device: "2", name: `G${index}`, type: "discrete GPU" }));
 * assert.deepEqual(sharedGpus(gpus, 3), ["local ranks 0, 2 share GPU 0 (G0)"]);
 * ```
 */
export function sharedGpus(gpus: readonly VulkanDevice[], nprocPerNode: number): string[] {
  if (gpus.length === 0) return [];
  return gpus.flatMap((gpu, g) => {
    const ranks = Array.from({ length: nprocPerNode }, (_, r) => r).filter((r) =>
      r % gpus.length === g
    );
    return ranks.length > 1
      ? [`local ranks ${ranks.join(", ")} share GPU ${gpu.index} (${gpu.name})`]
      : [];
  });
}

/**
 * The Vulkan devices of this host, as the device-select layer lists them to
 * a Deno process asking for an adapter; empty when the layer is not there
 * (nothing listed).
 */
export async function listVulkanDevices(): Promise<VulkanDevice[]> {
  const { stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "await navigator.gpu?.requestAdapter();"],
    env: { MESA_VK_DEVICE_SELECT: "list", DENO_WEBGPU_BACKEND: "vulkan" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return parseDeviceList(decoder.decode(stdout) + "\n" + decoder.decode(stderr));
}
