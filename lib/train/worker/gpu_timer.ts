/**
 * Times every GPU kernel of a stretch of work with WebGPU timestamp queries,
 * for `--trace`. While it records, each program tfjs's WebGPU backend
 * dispatches gets a compute pass of its own whose beginning and end write a
 * timestamp (a pass is the finest grain WebGPU times), and every command
 * buffer gets an empty timed pass at its start and at its end: the time the
 * device spent on it, measured around its kernels. The command buffer
 * resolves its own timestamps (resolved from a later one, lavapipe returns
 * zeros); when the timer stops, they are read back. Submission is left to
 * tfjs, so the device runs the kernels back to back as in an untraced step.
 *
 * It reaches into the backend (`recordAndSubmit`, `submitQueue`,
 * `ensureCommandEncoderReady`, `endComputePassEncoder`, the command encoder),
 * which tfjs 4.22 has; it declines (undefined) where they, or the adapter's
 * `timestamp-query` feature, are missing.
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";

/** One kernel as the device ran it. */
export interface KernelTime {
  /** The tfjs program, e.g. `Conv2DProgram`. */
  name: string;
  /** Start on the device's clock, in milliseconds (origin: the first command buffer's start). */
  startMs: number;
  /** End on the device's clock, in milliseconds. */
  endMs: number;
  /** The command buffer it ran in (index into `commandBuffers`). */
  commandBuffer: number;
}

/** One command buffer as the device ran it. */
export interface CommandBufferTime {
  /** Start of its first pass on the device's clock, in milliseconds. */
  startMs: number;
  /** End of its last pass on the device's clock, in milliseconds. */
  endMs: number;
  /** When the host submitted it (`performance.now()`). */
  submittedMs: number;
}

/** What {@linkcode GpuTimer.stop} resolves with. */
export interface GpuTimes {
  /** The kernels, in dispatch order. */
  kernels: KernelTime[];
  /** The command buffers that ran them, in submission order. */
  commandBuffers: CommandBufferTime[];
  /** Kernels dispatched while recording that the query set had no room for. */
  untimed: number;
}

/** The parts of tfjs's WebGPU backend this timer uses. */
interface WebGPUBackendInternals {
  device: GPUDevice;
  commandEncoder: GPUCommandEncoder | null;
  recordAndSubmit(program: { constructor: { name: string } }, ...rest: unknown[]): void;
  endComputePassEncoder(): void;
  ensureCommandEncoderReady(): void;
  submitQueue(): void;
}

/** Timed passes one recording holds: a query set has at most 4,096 queries, two per pass. */
const CAPACITY = 2048;
/** Offsets in a resolve buffer are multiples of this. */
const ALIGNMENT = 256;

/** A timed pass: a kernel, or the start or end marker of a command buffer. */
interface Entry {
  kind: "kernel" | "start" | "end";
  name: string;
  commandBuffer: number;
}

/** The pass being begun by a timer's kernel, while one records. */
let beginning: { timer: GpuTimer; name: string } | undefined;
let patched = false;

/** Makes `beginComputePass` add timestamp writes for the timer that is beginning a kernel's pass. */
function patchBeginComputePass(): void {
  if (patched) return;
  patched = true;
  const prototype = GPUCommandEncoder.prototype;
  const original = prototype.beginComputePass;
  prototype.beginComputePass = function (descriptor?: GPUComputePassDescriptor) {
    const writes = descriptor?.timestampWrites
      ? undefined
      : beginning?.timer.nextWrites({ kind: "kernel", name: beginning.name });
    return original.call(this, writes ? { ...descriptor, timestampWrites: writes } : descriptor);
  };
}

/**
 * Records kernel times on the active tfjs WebGPU backend.
 *
 * @example
 * ```ts ignore
 * import { GpuTimer } from "./gpu_timer.ts";
 *
 * const timer = GpuTimer.install(); // undefined without timestamp-query
 * timer?.start();
 * // … enqueue work, await its results …
 * const times = await timer?.stop();
 * ```
 */
export class GpuTimer {
  readonly #backend: WebGPUBackendInternals;
  readonly #querySet: GPUQuerySet;
  readonly #resolve: GPUBuffer;
  #recording = false;
  #entries: Entry[] = [];
  #submittedMs: number[] = [];
  /** Entries whose timestamps are not resolved yet: from this index on. */
  #unresolved = 0;
  /** Where each resolved entry's two timestamps are in the resolve buffer (bytes). */
  #offsets: number[] = [];
  #resolvedBytes = 0;
  #untimed = 0;

  private constructor(backend: WebGPUBackendInternals) {
    this.#backend = backend;
    const device = backend.device;
    this.#querySet = device.createQuerySet({ type: "timestamp", count: 2 * CAPACITY });
    this.#resolve = device.createBuffer({
      size: (16 + ALIGNMENT) * CAPACITY, // a resolve per entry, at worst
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
  }

  /**
   * A timer over the active backend, or undefined where it cannot time
   * kernels (not WebGPU, no `timestamp-query`, another tfjs).
   */
  static install(): GpuTimer | undefined {
    if (tf.getBackend() !== "webgpu" || typeof GPUCommandEncoder === "undefined") return undefined;
    const backend = tf.backend() as unknown as Record<string, unknown>;
    const methods = ["recordAndSubmit", "endComputePassEncoder", "ensureCommandEncoderReady"];
    if (!methods.concat("submitQueue").every((name) => typeof backend[name] === "function")) {
      return undefined;
    }
    const internals = backend as unknown as WebGPUBackendInternals;
    if (!internals.device?.features.has("timestamp-query")) return undefined;
    const timer = new GpuTimer(internals);
    patchBeginComputePass();
    const { recordAndSubmit, ensureCommandEncoderReady, submitQueue } = internals;
    internals.recordAndSubmit = function (this: WebGPUBackendInternals, program, ...rest) {
      if (!timer.#recording) return recordAndSubmit.call(this, program, ...rest);
      this.endComputePassEncoder(); // a pass of its own: its timestamps are this kernel's
      beginning = { timer, name: program.constructor.name };
      try {
        recordAndSubmit.call(this, program, ...rest);
      } finally {
        beginning = undefined;
        this.endComputePassEncoder();
      }
    };
    internals.ensureCommandEncoderReady = function (this: WebGPUBackendInternals) {
      const fresh = this.commandEncoder === null || this.commandEncoder === undefined;
      ensureCommandEncoderReady.call(this);
      if (fresh && timer.#recording) timer.#marker(this.commandEncoder!, "start");
    };
    internals.submitQueue = function (this: WebGPUBackendInternals) {
      if (timer.#recording || timer.#unresolved < timer.#entries.length) {
        this.endComputePassEncoder();
        if (timer.#recording) timer.#marker(this.commandEncoder!, "end");
        timer.#resolvePending(this.commandEncoder!);
        timer.#submittedMs.push(performance.now());
      }
      submitQueue.call(this);
    };
    return timer;
  }

  /** The timestamp writes of the next timed pass, or undefined once the query set is full. */
  nextWrites(entry: Omit<Entry, "commandBuffer">): GPUComputePassTimestampWrites | undefined {
    if (!this.#recording) return undefined;
    const k = this.#entries.length;
    if (k >= CAPACITY) {
      if (entry.kind === "kernel") this.#untimed++;
      return undefined;
    }
    this.#entries.push({ ...entry, commandBuffer: this.#submittedMs.length });
    return {
      querySet: this.#querySet,
      beginningOfPassWriteIndex: 2 * k,
      endOfPassWriteIndex: 2 * k + 1,
    };
  }

  /** Starts recording (the kernels dispatched from now on). */
  start(): void {
    this.#entries = [];
    this.#submittedMs = [];
    this.#offsets = [];
    this.#unresolved = 0;
    this.#resolvedBytes = 0;
    this.#untimed = 0;
    this.#recording = true;
    const backend = this.#backend;
    if (backend.commandEncoder) {
      backend.endComputePassEncoder();
      this.#marker(backend.commandEncoder, "start");
    }
  }

  /**
   * Stops recording; resolves once the device has run everything recorded,
   * with the kernels' and the command buffers' times.
   */
  async stop(): Promise<GpuTimes> {
    const backend = this.#backend;
    backend.ensureCommandEncoderReady();
    backend.submitQueue(); // the last command buffer, with its end marker
    this.#recording = false;
    const untimed = this.#untimed;
    const entries = this.#entries;
    if (entries.length === 0) return { kernels: [], commandBuffers: [], untimed };
    const bytes = this.#resolvedBytes;
    const staging = backend.device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    backend.ensureCommandEncoderReady();
    backend.commandEncoder!.copyBufferToBuffer(this.#resolve, 0, staging, 0, bytes);
    backend.submitQueue();
    await staging.mapAsync(GPUMapMode.READ);
    const stamps = new BigUint64Array(staging.getMappedRange().slice(0));
    staging.unmap();
    staging.destroy();
    const at = (k: number, end: 0 | 1) => stamps[this.#offsets[k] / 8 + end];
    const origin = at(0, 0);
    const ms = (k: number, end: 0 | 1) => Number(at(k, end) - origin) / 1e6;
    const kernels: KernelTime[] = [];
    const commandBuffers: CommandBufferTime[] = this.#submittedMs.map((submittedMs) => ({
      startMs: NaN,
      endMs: NaN,
      submittedMs,
    }));
    entries.forEach((entry, k) => {
      const buffer = commandBuffers[entry.commandBuffer];
      if (entry.kind === "start") buffer.startMs = ms(k, 0);
      else if (entry.kind === "end") buffer.endMs = ms(k, 1);
      else {
        kernels.push({
          name: entry.name,
          startMs: ms(k, 0),
          endMs: ms(k, 1),
          commandBuffer: entry.commandBuffer,
        });
      }
    });
    return {
      kernels,
      commandBuffers,
      untimed,
    };
  }

  /** An empty timed pass: the start or end of `encoder`'s command buffer on the device. */
  #marker(encoder: GPUCommandEncoder, kind: "start" | "end"): void {
    const writes = this.nextWrites({ kind, name: kind });
    if (writes) encoder.beginComputePass({ timestampWrites: writes }).end();
  }

  /** Resolves the timestamps written since the last resolve, in `encoder` (which wrote them). */
  #resolvePending(encoder: GPUCommandEncoder): void {
    const [from, to] = [this.#unresolved, this.#entries.length];
    if (to === from) return;
    const offset = this.#resolvedBytes;
    encoder.resolveQuerySet(this.#querySet, 2 * from, 2 * (to - from), this.#resolve, offset);
    for (let k = from; k < to; k++) this.#offsets.push(offset + 16 * (k - from));
    this.#resolvedBytes = Math.ceil((offset + 16 * (to - from)) / ALIGNMENT) * ALIGNMENT;
    this.#unresolved = to;
  }
}
