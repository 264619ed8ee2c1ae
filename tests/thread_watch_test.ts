import assert from "node:assert/strict";
import { runScript } from "./helpers.ts";
import { ignoredWithout } from "./skips.ts";

const PROBE = "tests/fixtures/thread_watch_probe.ts";

Deno.test(
  "ThreadWatch sees its worker's thread run, then exit after terminate, while another runs on (--allow-all, Linux)",
  {
    ignore: await ignoredWithout("linux"),
  },
  async () => {
    const { code, stdout, stderr } = await runScript(PROBE, [], { permissions: ["--allow-all"] });
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^observable true$/m);
    assert.match(stdout, /^exited while running false$/m);
    const ms = Number(stdout.match(/^exited after terminate true in (\d+) ms$/m)?.[1]);
    assert.ok(ms < 10_000, stdout); // not held up by the other worker, which runs on
    assert.match(stdout, /^without add, exited false$/m);
  },
);

Deno.test(
  "ThreadWatch sees the threads through libc with --allow-ffi, as deno task train has (Linux)",
  {
    ignore: await ignoredWithout("linux"),
  },
  async () => {
    const permissions = ["--allow-read", "--allow-ffi"]; // /proc/self needs --allow-all in Deno
    const { code, stdout, stderr } = await runScript(PROBE, [], { permissions });
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^observable true$/m);
    assert.match(stdout, /^exited while running false$/m);
    const ms = Number(stdout.match(/^exited after terminate true in (\d+) ms$/m)?.[1]);
    assert.ok(ms < 10_000, stdout); // not held up by the other worker, which runs on
    assert.match(stdout, /^without add, exited false$/m);
  },
);

Deno.test("ThreadWatch falls back to a grace period with neither --allow-all nor --allow-ffi", async () => {
  const { code, stdout, stderr } = await runScript(PROBE, [], { permissions: ["--allow-read"] });
  assert.equal(code, 0, stderr);
  assert.match(stdout, /^observable false$/m);
  const ms = Number(stdout.match(/^exited after terminate true in (\d+) ms$/m)?.[1]);
  assert.ok(ms >= 490, stdout); // the grace period, 500 ms
});
