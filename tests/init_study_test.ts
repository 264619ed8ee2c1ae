import assert from "node:assert/strict";
import { runScript, withTempDir, writeTinyDataset } from "./helpers.ts";

Deno.test("init_study --signal measures both initialisations at step 0", async () => {
  await withTempDir(async (dir) => {
    await writeTinyDataset(dir);
    const { code, stdout, stderr } = await runScript("scripts/init_study.ts", [
      "--signal",
      "--data-dir",
      dir,
      "--input-size",
      "67",
      "--width",
      "0.125",
      "--seeds",
      "0",
    ]);
    assert.equal(code, 0, stderr);
    const rows = stdout.split("\n").filter((line) =>
      /^\| (he-normal|glorot-uniform) \|/.test(line)
    );
    assert.equal(rows.length, 2, stdout);
    for (const row of rows) {
      const cells = row.split("|").map((cell) => cell.trim());
      assert.equal(cells[3].split(", ").length, 12, "one RMS per convolution");
      for (const value of [...cells[3].split(", "), cells[4], cells[5], cells[6], cells[7]]) {
        assert.ok(Number.isFinite(Number(value)) && Number(value) > 0, row);
      }
    }
  });
});

Deno.test("init_study rejects a bad --seeds list with exit code 2", async () => {
  const { code, stderr } = await runScript("scripts/init_study.ts", ["--seeds", "a,1"]);
  assert.equal(code, 2);
  assert.match(stderr, /--seeds must be comma-separated integers/);
});
