/**
 * Helpers shared by the command-line scripts: flag parsing with
 * `node:util`'s `parseArgs` in strict mode, and one-line errors with the
 * right exit code instead of stack traces.
 *
 * @module
 */

import { probeWritable } from "../util/atomic_write.ts";
import { dirname, resolve } from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { DataError, InterruptedError, UsageError } from "../errors.ts";

/**
 * Runs `main` and exits: 0 on success, 2 with `error: …` on stderr for usage
 * and data errors (including unknown or malformed flags), 130 after an
 * interruption (Ctrl-C), 1 with the message for anything else. Never prints a
 * stack trace unless `DEBUG` is set.
 *
 * @example
 * ```ts ignore
 * import { runCli } from "./cli.ts";
 *
 * await runCli(async () => {
 *   console.log("hello");
 * });
 * ```
 */
export async function runCli(main: () => Promise<void>): Promise<never> {
  try {
    await main();
    Deno.exit(0);
  } catch (error) {
    if (error instanceof InterruptedError) {
      console.error(error.message);
      // As a shell reports a process stopped by the signal: 128 + its number.
      Deno.exit(error.signal === "SIGTERM" ? 143 : 130);
    }
    const usage = error instanceof UsageError || error instanceof DataError ||
      isParseArgsError(error);
    const message = error instanceof Error ? error.message : String(error);
    console.error(`error: ${message.split("\n")[0]}`);
    if (readDebug() && error instanceof Error) console.error(error.stack);
    Deno.exit(usage ? 2 : 1);
  }
}

/**
 * `parseArgs` in strict mode over `Deno.args` (or `options.args`); unknown
 * flags and missing values become {@linkcode UsageError}s.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseFlags } from "./cli.ts";
 *
 * const { values } = parseFlags({ options: { workers: { type: "string" } }, args: ["--workers", "4"] });
 * assert.ok(values.workers === "4");
 * ```
 */
export function parseFlags<T extends ParseArgsConfig>(
  config: T,
): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs<T>({ ...config, args: config.args ?? Deno.args, strict: true });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new UsageError(`${message.replaceAll("\n", " ")} (see --help)`);
  }
}

/**
 * Parses a numeric flag value, throwing a {@linkcode UsageError} that names
 * the flag when it is not a number (or not an integer when `integer` is set).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { numberFlag } from "./cli.ts";
 *
 * assert.ok(numberFlag("--lr", "0.1") === 0.1);
 * assert.ok(numberFlag("--lr", undefined) === undefined);
 * ```
 */
export function numberFlag(
  name: string,
  value: string | undefined,
  options: { integer?: boolean } = {},
): number | undefined {
  if (value === undefined) return undefined;
  const number = value.trim() === "" ? NaN : Number(value);
  if (!Number.isFinite(number) || (options.integer && !Number.isInteger(number))) {
    const kind = options.integer ? "an integer" : "a number";
    throw new UsageError(`${name} must be ${kind}, got "${value}"`);
  }
  return number;
}

/**
 * Resolves the path of an output file given by `flag` and checks, before any
 * work starts, that its directory exists, that it is not a directory, and —
 * by creating and removing a probe file there — that it can be written.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { outputPath } from "./cli.ts";
 *
 * const dir = await Deno.makeTempDir();
 * assert.equal(await outputPath("--json", `${dir}/out.json`), `${dir}/out.json`);
 * await assert.rejects(outputPath("--json", "/nonexistent/dir/out.json"), /does not exist/);
 * await Deno.remove(dir);
 * ```
 */
export async function outputPath(flag: string, path: string): Promise<string> {
  const full = resolve(path);
  const stat = await statOrNull(dirname(full), `${flag} ${path}`);
  if (stat === null || !stat.isDirectory) {
    throw new UsageError(`${flag} ${path}: directory ${dirname(full)} does not exist`);
  }
  const existing = await statOrNull(full, `${flag} ${path}`);
  if (existing?.isDirectory) throw new UsageError(`${flag} ${path} is a directory`);
  await probeWritable(dirname(full)).catch((error: Error) => {
    throw new UsageError(`${flag} ${path}: cannot write in ${dirname(full)}: ${error.message}`);
  });
  return full;
}

/**
 * `Deno.stat(path)`, or null when nothing is there; any other failure (no
 * permission, a path Deno keeps out of reach) is a `UsageError` naming `what`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { statOrNull } from "./cli.ts";
 *
 * assert.equal(await statOrNull("/nonexistent", "--json /nonexistent"), null);
 * ```
 */
export async function statOrNull(path: string, what: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw new UsageError(`${what}: cannot use ${path}: ${(error as Error).message}`);
  }
}

function isParseArgsError(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  return typeof code === "string" && code.startsWith("ERR_PARSE_ARGS");
}

function readDebug(): boolean {
  try {
    return Deno.env.get("DEBUG") !== undefined;
  } catch {
    return false;
  }
}
