/**
 * The library used from a project of its own, outside this repository, the
 * three ways the README shows: an import-map entry to a local clone, the
 * package by name (resolved to the clone through `links`, as JSR would serve
 * it), and a vendored copy of the library's files. For each: the program
 * type-checks, trains a model and data of its own with 2 workers, Adam and
 * checkpoints under exactly the permissions the README lists (`-R -W -E --allow-sys=systemMemoryInfo`),
 * is stopped by Ctrl-C through `stopOnSignals`, resumes, and ends with the
 * weights of an uninterrupted run, bit for bit; stderr holds nothing but the
 * Ctrl-C line.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT, scriptEnv } from "./helpers.ts";

const PROGRAM = await Deno.readTextFile(
  new URL("./fixtures/external_main.ts.txt", import.meta.url),
);
const PERMISSIONS = ["-R", "-W", "-E", "--allow-sys=systemMemoryInfo"];

/** The three ways: what the project's deno.json says, and what its program imports. */
type Way = { config: unknown; mod: string; model: string };
const WAYS: Record<string, (project: string) => Promise<Way>> = {
  "an import-map entry to a local clone": () =>
    Promise.resolve({
      config: { imports: { "deno-ddp/": `file://${ROOT}` } },
      mod: "deno-ddp/mod.ts",
      model: "deno-ddp/model.ts",
    }),
  "the package by name (links to the clone)": () =>
    Promise.resolve({
      config: {
        links: [ROOT],
        imports: { "@deno-ddp/deno-ddp": "jsr:@deno-ddp/deno-ddp@^0.2.0" },
      },
      mod: "@deno-ddp/deno-ddp",
      model: "@deno-ddp/deno-ddp/model",
    }),
  "a vendored copy": async (project) => {
    await copyLibrary(join(project, "vendor", "deno-ddp"));
    return { config: {}, mod: "./vendor/deno-ddp/mod.ts", model: "./vendor/deno-ddp/model.ts" };
  },
};

/** Copies what the package publishes — its entry points, lib/ and workers/ — into `dir`. */
async function copyLibrary(dir: string): Promise<void> {
  const entries = ["mod.ts", "model.ts", "checkpoint.ts", "data.ts", "launch.ts", "internal.ts"];
  for (const folder of ["lib", "workers"]) {
    for await (const file of walk(join(ROOT, folder))) entries.push(file.slice(ROOT.length));
  }
  for (const entry of entries) {
    await Deno.mkdir(join(dir, entry, ".."), { recursive: true });
    await Deno.copyFile(join(ROOT, entry), join(dir, entry));
  }
}

async function* walk(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* walk(path);
    else if (entry.isFile) yield path;
  }
}

/** Runs the project's program; with `interruptAt`, sends SIGINT once it reports that many steps. */
async function runProgram(
  project: string,
  args: string[],
  interruptAt?: number,
  permissions = PERMISSIONS,
) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...permissions, "main.ts", ...args],
    cwd: project,
    clearEnv: true,
    env: scriptEnv(),
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // A guard, not a speed goal: a program that never ends must not hang the test run.
  const guard = setTimeout(() => child.kill("SIGKILL"), 300_000);
  let stdout = "";
  let steps = 0;
  const decoder = new TextDecoder();
  const stderr = new Response(child.stderr).text();
  for await (const chunk of child.stdout) {
    const text = decoder.decode(chunk, { stream: true });
    stdout += text;
    steps += text.match(/^step /gm)?.length ?? 0;
    if (interruptAt !== undefined && steps >= interruptAt) {
      child.kill("SIGINT");
      interruptAt = undefined;
    }
  }
  const status = await child.status;
  clearTimeout(guard);
  return { code: status.code, stdout, stderr: await stderr };
}

/** A project of its own in a temporary directory, importing the library `way`. */
async function makeProject(way: string): Promise<string> {
  const project = await Deno.makeTempDir({ prefix: "ddp-user-project-" });
  assert.ok(!project.startsWith(ROOT), "the project lies outside the repository");
  const { config, mod, model } = await WAYS[way](project);
  await Deno.writeTextFile(join(project, "deno.json"), JSON.stringify(config, null, 2));
  await Deno.writeTextFile(
    join(project, "main.ts"),
    PROGRAM.replace('"LIBRARY/mod.ts"', `"${mod}"`).replace('"LIBRARY/model.ts"', `"${model}"`),
  );
  const check = await new Deno.Command(Deno.execPath(), {
    args: ["check", "main.ts"],
    cwd: project,
    env: scriptEnv(),
  }).output();
  assert.equal(check.code, 0, new TextDecoder().decode(check.stderr));
  return project;
}

/** The program's uninterrupted run: exit 0, nothing on stderr; its final SHA-256. */
async function straightRun(project: string): Promise<string> {
  const straight = await runProgram(project, [join(project, "straight")]);
  assert.equal(straight.code, 0, straight.stderr);
  assert.equal(straight.stderr, "", "no noise under the documented permissions");
  const checksum = straight.stdout.match(/^checksum ([0-9a-f]{64})$/m)?.[1];
  assert.ok(checksum, straight.stdout);
  return checksum;
}

/** The checksum every way must reach, set by the first test. */
let reference: string | undefined;

Deno.test("a project of its own imports the library through an import-map entry to a local clone: interrupted by Ctrl-C, resumed, the uninterrupted bits", async () => {
  const project = await makeProject("an import-map entry to a local clone");
  try {
    const checksum = reference = await straightRun(project);
    const ckpt = join(project, "ckpt");
    const stopped = await runProgram(project, [ckpt], 15); // 12 steps per epoch: in epoch 2
    assert.equal(stopped.code, 130, stopped.stderr);
    assert.match(
      stopped.stderr,
      /^SIGINT: stopping at the next step boundary to write a checkpoint \(Ctrl-C again to quit at once\)\n$/,
    );
    assert.match(
      stopped.stdout,
      /^interrupted: interrupted after 1 epoch\(s\) and \d+ step\(s\); checkpoint /m,
    );
    assert.doesNotMatch(stopped.stdout, /^checksum /m);
    const resumed = await runProgram(project, [ckpt, "--resume"]);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.equal(resumed.stderr, "");
    assert.match(resumed.stdout, new RegExp(`^checksum ${checksum}$`, "m"));
  } finally {
    await Deno.remove(project, { recursive: true });
  }
});

for (const way of ["the package by name (links to the clone)", "a vendored copy"]) {
  Deno.test(`a project of its own imports the library through ${way}: it type-checks, trains, and reaches the same bits`, async () => {
    const project = await makeProject(way);
    try {
      const checksum = await straightRun(project);
      assert.ok(reference, "the import-map test ran first");
      assert.equal(checksum, reference);
    } finally {
      await Deno.remove(project, { recursive: true });
    }
  });
}

Deno.test("a project that withholds a permission the README lists is told which, in one line, before any worker starts", async () => {
  const project = await Deno.makeTempDir({ prefix: "ddp-user-project-" });
  try {
    const { config, mod, model } = await WAYS["an import-map entry to a local clone"](project);
    await Deno.writeTextFile(join(project, "deno.json"), JSON.stringify(config));
    await Deno.writeTextFile(
      join(project, "main.ts"),
      PROGRAM.replace('"LIBRARY/mod.ts"', `"${mod}"`).replace('"LIBRARY/model.ts"', `"${model}"`),
    );
    const cases: [string[], RegExp][] = [
      [
        ["-R", "-W", "--allow-sys=systemMemoryInfo"],
        /the webgpu backend needs --allow-env \(at least XDG_RUNTIME_DIR, /,
      ],
      [
        [`--allow-read=${project}`, "-W", "-E", "--allow-sys=systemMemoryInfo"],
        /train\(\) starts worker threads from .*: it needs read access there \(--allow-read/,
      ],
    ];
    for (const [permissions, pattern] of cases) {
      const run = await runProgram(project, [join(project, "ckpt")], undefined, permissions);
      assert.equal(run.code, 1, run.stderr);
      // The program lets the error through, so Deno prints it: its first line is the library's.
      assert.match(run.stderr.split("\n")[0], /^error: Uncaught \(in promise\) UsageError: /);
      assert.match(run.stderr.split("\n")[0], pattern);
      assert.doesNotMatch(run.stderr, /XDG_RUNTIME_DIR is invalid/);
      assert.doesNotMatch(run.stdout, /^step /m, "no step ran");
    }
  } finally {
    await Deno.remove(project, { recursive: true });
  }
});
