/**
 * `deno publish --dry-run`, failing on any warning as well as on errors: the
 * package must publish cleanly (licence, exports, no unanalysable imports).
 * Part of `deno task check`. Run: deno run --allow-run .ci/publish_check.ts
 *
 * @module
 */

const { code, stderr, stdout } = await new Deno.Command(Deno.execPath(), {
  args: ["publish", "--dry-run", "--allow-dirty"],
  env: { NO_COLOR: "1" },
}).output();
const output = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
const problems = output.split("\n").filter((line) => /^(warning|error)\b/.test(line));
if (code !== 0 || problems.length > 0) {
  console.error(output);
  console.error(`publish check: exit code ${code}, ${problems.length} warning(s) or error(s)`);
  Deno.exit(1);
}
console.log("publish check: deno publish --dry-run is clean");
