import assert from "node:assert/strict";
import { runScript } from "./helpers.ts";
import { ignoredWithout } from "./skips.ts";

const PROBE = "tests/fixtures/thread_watch_probe.ts";

/**
 * Runs the probe where ThreadWatch can see threads: the watched worker's end
 * is seen, not held up by the other worker, which runs on, while a watch
 * without `add()` waits for that one too. Resolves with the probe's output.
 */
async function assertWatched(permissions: string[], args: string[] = []): Promise<string> {
  const { code, stdout, stderr } = await runScript(PROBE, args, { permissions });
  assert.equal(code, 0, stderr);
  assert.match(stdout, /^observable true$/m);
  assert.match(stdout, /^exited while running false$/m);
  const ms = Number(stdout.match(/^exited after terminate true in (\d+) ms$/m)?.[1]);
  assert.ok(ms < 10_000, stdout);
  assert.match(stdout, /^without add, exited false$/m);
  return stdout;
}

Deno.test(
  "ThreadWatch sees its worker's thread run, then exit after terminate, while another runs on (--allow-all, Linux)",
  { ignore: await ignoredWithout("linux") },
  async () => {
    await assertWatched(["--allow-all"]);
  },
);

Deno.test(
  "ThreadWatch sees the threads through libc with --allow-ffi, as deno task train has (Linux)",
  { ignore: await ignoredWithout("linux") },
  async () => {
    await assertWatched(["--allow-read", "--allow-ffi"]); // /proc/self needs --allow-all in Deno
  },
);

Deno.test(
  "ThreadWatch waits for every thread of a worker with a WebGPU device (they share its name), and for no other",
  { ignore: await ignoredWithout("software-adapter") },
  async () => {
    const stdout = await assertWatched(["--allow-all"], ["gpu"]);
    const named = Number(stdout.match(/^threads named after the worker (\d+)$/m)?.[1]);
    assert.ok(named > 1, stdout); // the driver's threads as well as the worker's own
  },
);

Deno.test("ThreadWatch falls back to a grace period with neither --allow-all nor --allow-ffi", async () => {
  const { code, stdout, stderr } = await runScript(PROBE, [], { permissions: ["--allow-read"] });
  assert.equal(code, 0, stderr);
  assert.match(stdout, /^observable false$/m);
  const ms = Number(stdout.match(/^exited after terminate true in (\d+) ms$/m)?.[1]);
  assert.ok(ms >= 490, stdout); // the grace period, 500 ms
});
