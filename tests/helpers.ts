/**
 * Shared test helpers: the local Fashion-MNIST copy and generated IDX files.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import type { Dataset } from "../lib/data/dataset.ts";
import { mulberry32 } from "../lib/util/random.ts";

/**
 * The directory with the real Fashion-MNIST files for tests: `$FASHION_MNIST_DIR`
 * or `../shared/data/fashion-mnist` beside the checkout; undefined (and a loud
 * warning) when neither exists, so tests that need it are skipped visibly.
 */
export const DATA_DIR: string | undefined = findDataDir();

function findDataDir(): string | undefined {
  const candidates = [
    Deno.env.get("FASHION_MNIST_DIR"),
    fileURLToPath(new URL("../../shared/data/fashion-mnist", import.meta.url)),
  ];
  for (const dir of candidates) {
    if (dir && existsSync(`${dir}/train-images-idx3-ubyte.gz`)) return dir;
  }
  console.warn(
    "\n*** SKIPPING tests that need the real Fashion-MNIST files: set FASHION_MNIST_DIR or " +
      "put them in ../shared/data/fashion-mnist ***\n",
  );
  return undefined;
}

function existsSync(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** An IDX image file (magic 2051) of `count` images whose pixels are `pixel(i)`. */
export function idxImages(
  count: number,
  rows: number,
  cols: number,
  pixel: (index: number) => number = (i) => i % 256,
): Uint8Array {
  const bytes = new Uint8Array(16 + count * rows * cols);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, 2051);
  view.setUint32(4, count);
  view.setUint32(8, rows);
  view.setUint32(12, cols);
  for (let i = 0; i < count * rows * cols; i++) bytes[16 + i] = pixel(i);
  return bytes;
}

/** An IDX label file (magic 2049). */
export function idxLabels(labels: readonly number[]): Uint8Array {
  const bytes = new Uint8Array(8 + labels.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, 2049);
  view.setUint32(4, labels.length);
  bytes.set(labels, 8);
  return bytes;
}

/** Gzips `bytes`. */
export async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Writes a complete, valid, tiny Fashion-MNIST-shaped data set (gzipped) into `dir`. */
export async function writeTinyDataset(
  dir: string,
  options: { train?: number; test?: number } = {},
): Promise<void> {
  const train = options.train ?? 20;
  const test = options.test ?? 10;
  const labels = (n: number) => Array.from({ length: n }, (_, i) => i % 10);
  await Deno.writeFile(`${dir}/train-images-idx3-ubyte.gz`, await gzip(idxImages(train, 28, 28)));
  await Deno.writeFile(`${dir}/train-labels-idx1-ubyte.gz`, await gzip(idxLabels(labels(train))));
  await Deno.writeFile(`${dir}/t10k-images-idx3-ubyte.gz`, await gzip(idxImages(test, 28, 28)));
  await Deno.writeFile(`${dir}/t10k-labels-idx1-ubyte.gz`, await gzip(idxLabels(labels(test))));
}

/**
 * `count` image-like examples: a bar whose place and brightness encode the
 * label, and a random block, on a black background — constant regions, as in
 * Fashion-MNIST. (Pure noise images put near-ties into every max-pooling
 * window, so that float rounding decides which input gets the gradient and a
 * few SGD steps amplify the last bit; real images do not behave like that.)
 */
export function imageLikeDataset(count: number, seed: number): Dataset {
  const next = mulberry32(seed);
  const images = new Uint8Array(count * 784);
  const labels = new Uint8Array(count);
  const fill = (n: number, [x0, y0, w, h, value]: number[]) => {
    for (let y = y0; y < Math.min(28, y0 + h); y++) {
      for (let x = x0; x < Math.min(28, x0 + w); x++) images[n * 784 + y * 28 + x] = value;
    }
  };
  for (let n = 0; n < count; n++) {
    const label = next() % 10;
    labels[n] = label;
    fill(n, [2 + 2 * label, 4, 4, 20, 120 + 12 * label]);
    fill(n, [next() % 20, next() % 20, 6, 6, 60 + (next() % 100)]);
  }
  return { images, labels, count, rows: 28, cols: 28 };
}

/**
 * `length` deterministic gradient-like values of both signs spread over 40
 * binary orders of magnitude (2^-20 to 2^20), so that the order of a sum
 * changes its bits: what the all-reduce tests compare schedules on.
 */
export function randomVector(length: number, seed: number): Float32Array {
  const out = new Float32Array(length);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < length; i++) {
    x = (x * 1664525 + 1013904223) >>> 0;
    out[i] = ((x / 2 ** 32) - 0.5) * 2 ** ((x % 40) - 20);
  }
  return out;
}

/** The project's root directory. */
export const ROOT: string = fileURLToPath(new URL("..", import.meta.url));

/**
 * The permissions `deno task eval` runs with: `deno task train`'s
 * ({@linkcode TRAIN_PERMISSIONS}) less FFI.
 */
export const TASK_PERMISSIONS: readonly string[] = [
  "--unstable-bundle",
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-env",
  "--allow-sys=systemMemoryInfo",
];

/** The permissions `deno task train` runs with (deno.json; `tests/launch_test.ts` holds them equal). */
export const TRAIN_PERMISSIONS: readonly string[] = [...TASK_PERMISSIONS, "--allow-ffi"];

/**
 * `deno run` arguments for `script` (relative to the root) with `args`: by
 * default with the permissions of its task, `deno task train`'s for
 * `scripts/train.ts`.
 */
export function scriptArgs(
  script: string,
  args: readonly string[],
  permissions: readonly string[] = script === "scripts/train.ts"
    ? TRAIN_PERMISSIONS
    : TASK_PERMISSIONS,
): string[] {
  return ["run", ...permissions, script, ...args];
}

/**
 * The environment of a script a test runs: this process's, less the
 * variables that change what the project does (so that tests do not depend
 * on the caller's settings), with colours off.
 */
export function scriptEnv(): Record<string, string> {
  const env = Deno.env.toObject();
  for (const name of ["FASHION_MNIST_DIR", "DEBUG", "DDP_TRACE", "DDP_TOKEN"]) delete env[name];
  // A launcher's variables would make every script a process of a job.
  for (const name of Object.keys(env)) {
    if (
      /^(RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|MASTER_ADDR|MASTER_PORT|SLURM_.*|OMPI_.*)$/
        .test(name)
    ) {
      delete env[name];
    }
  }
  return { ...env, NO_COLOR: "1" };
}

/**
 * Runs `script` to completion in the root directory; resolves with its exit
 * code, the signal that ended it (null if none) and its output. With
 * `options.killAfterMs`, a script still running then is killed (SIGKILL): a
 * guard, so that a process that never ends cannot hang the test run.
 */
export async function runScript(
  script: string,
  args: readonly string[],
  options: {
    permissions?: readonly string[];
    env?: Record<string, string>;
    killAfterMs?: number;
  } = {},
): Promise<{ code: number; signal: Deno.Signal | null; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: scriptArgs(script, args, options.permissions),
    cwd: ROOT,
    clearEnv: true,
    env: { ...scriptEnv(), ...options.env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const guard = options.killAfterMs === undefined
    ? undefined
    : setTimeout(() => child.kill("SIGKILL"), options.killAfterMs);
  const { code, signal, stdout, stderr } = await child.output();
  clearTimeout(guard);
  const decoder = new TextDecoder();
  return { code, signal, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

/**
 * Flags of a small 3-epoch run on the tiny data set in `dir` (see
 * {@linkcode writeTinyDataset}) that checkpoints into `dir/ckpt`.
 */
export function tinyRunFlags(dir: string): string[] {
  return [
    ...["--data-dir", dir, "--epochs", "3", "--batch-size", "8"],
    ...["--input-size", "67", "--width", "0.125", "--checkpoint-dir", `${dir}/ckpt`],
  ];
}

/**
 * Runs `scripts/train.ts` with `flags` in the root directory until its
 * standard output shows `when`, then sends it `signal`; resolves with its exit
 * code and its standard error once it has ended.
 */
export async function interruptTrain(
  flags: readonly string[],
  when: string,
  signal: Deno.Signal,
): Promise<{ code: number; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: scriptArgs("scripts/train.ts", flags),
    cwd: ROOT,
    clearEnv: true,
    env: scriptEnv(),
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let stdout = "";
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    stdout += decoder.decode(chunk);
    if (stdout.includes(when)) {
      child.kill(signal);
      break;
    }
  }
  const { code } = await child.status;
  return { code, stderr: await stderr };
}

/**
 * Runs `fn` with the environment variables in `vars` set (a string) or unset
 * (undefined), and restores them afterwards, so that a test does not depend on
 * the caller's environment.
 */
export async function withEnv<T>(
  vars: Record<string, string | undefined>,
  fn: () => Promise<T>,
): Promise<T> {
  const before = Object.fromEntries(Object.keys(vars).map((name) => [name, Deno.env.get(name)]));
  const apply = (values: Record<string, string | undefined>) => {
    for (const [name, value] of Object.entries(values)) {
      if (value === undefined) Deno.env.delete(name);
      else Deno.env.set(name, value);
    }
  };
  apply(vars);
  try {
    return await fn();
  } finally {
    apply(before);
  }
}

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
export async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Float32 values from every class, drawn by `seed`. */
export function awkwardVector(n: number, seed: number): Float32Array {
  const random = mulberry32(seed);
  const bits = new Uint32Array(n);
  const sign = () => (random() & 1) << 31;
  for (let i = 0; i < n; i++) {
    const kind = random() % 10;
    const mantissa = random() & 0x7fffff;
    if (kind === 0) bits[i] = sign() | mantissa; // subnormal (or a zero)
    else if (kind === 1) bits[i] = sign(); // ±0
    else if (kind === 2) bits[i] = sign() | ((0xf0 + random() % 15) << 23) | mantissa; // huge
    else if (kind === 3) bits[i] = sign() | ((1 + random() % 8) << 23) | mantissa; // tiny normal
    else if (kind === 4) bits[i] = random() % 50 === 0 ? sign() | 0x7f800000 : random() >>> 0; // ±∞ or any
    else bits[i] = sign() | ((110 + random() % 30) << 23) | mantissa; // ordinary, 2⁻¹⁷…2¹²
  }
  return new Float32Array(bits.buffer);
}

/** Index of the first element whose bits differ (NaN matches any NaN), or -1. */
function firstDifference(a: Float32Array, b: Float32Array): number {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < a.length; i++) {
    if (x[i] !== y[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return i;
  }
  return -1;
}

export function assertSameBits(simd: Float32Array, scalar: Float32Array, what: string): void {
  const i = firstDifference(simd, scalar);
  assert.equal(i, -1, `${what}: element ${i} is ${simd[i]} fast, ${scalar[i]} by the reference`);
}
