/**
 * `deno task test`: every test, in two lanes. Most files run two at a time
 * (`deno test --parallel`, as many as the machine has cores); then the files
 * of {@linkcode ALONE} run one after another on an otherwise idle machine.
 * Arguments (`--filter NAME`, `--fail-fast`, …) go to both lanes; the exit
 * code is the first non-zero one (with `--fail-fast`, a failing first lane
 * ends the run).
 *
 * On this project's 2-core machine the whole suite took 14m47s in one lane
 * and 10m40s in these two (7m46s, then 2m49s), 2026-12-06; with
 * tests/bench_test.ts in the first lane instead, 11m54s.
 *
 * @module
 */

/**
 * Files that must not share the machine: they measure a speed ratio or a
 * stall, or build network namespaces under fixed names.
 */
export const ALONE: readonly string[] = [
  "tests/scaling_test.ts", // two workers against one: a throughput ratio
  "tests/bench_test.ts", // the bench's wire section builds the `ddp-wire-*` namespaces, and
  "tests/wire_bench_test.ts", // so does this file
  "tests/netns_test.ts", // namespaces of its own, and a silence limit
  "tests/elastic_test.ts", // a browser page's longest stall
  "tests/idx_test.ts", // a bomb's read time against a good file's
  "tests/process_group_test.ts", // handshakes within a time limit
];

/** Where the documentation examples are, which `deno test --doc` runs; the test files are added. */
const DOC_ROOTS = [
  "lib/",
  "mod.ts",
  "model.ts",
  "checkpoint.ts",
  "data.ts",
  "launch.ts",
  "internal.ts",
  "README.md",
  "SECURITY.md",
  "docs/models.md",
];

const PERMISSIONS = [
  "--unstable-bundle",
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-env",
  "--allow-sys",
  "--allow-run",
  "--allow-ffi", // as `deno task train`: ThreadWatch sees the worker threads end through libc
];

async function denoTest(args: string[]): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), { args: ["test", ...args] }).spawn();
  return (await child.status).code;
}

/**
 * The test files but those of {@linkcode ALONE}, listed one by one: `--ignore` is not applied
 * beside a second root (Deno 2.9.6).
 */
function sharedTestFiles(): string[] {
  const files = [...Deno.readDirSync(new URL(".", import.meta.url))]
    .filter((entry) => entry.isFile && entry.name.endsWith("_test.ts"))
    .map((entry) => `tests/${entry.name}`);
  return files.filter((file) => !ALONE.includes(file)).sort();
}

if (import.meta.main) {
  const shared = await denoTest([
    "--parallel",
    "--doc",
    ...PERMISSIONS,
    ...Deno.args,
    ...DOC_ROOTS,
    ...sharedTestFiles(),
  ]);
  if (shared !== 0 && Deno.args.some((arg) => arg.startsWith("--fail-fast"))) Deno.exit(shared);
  const alone = await denoTest([...PERMISSIONS, ...Deno.args, ...ALONE]);
  Deno.exit(shared !== 0 ? shared : alone);
}
