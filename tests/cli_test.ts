import assert from "node:assert/strict";
import {
  interruptTrain,
  runScript,
  tinyRunFlags,
  withTempDir,
  writeTinyDataset,
} from "./helpers.ts";
import { ignoredWithout } from "./skips.ts";

const runTrain = (args: string[]) => runScript("scripts/train.ts", args);

Deno.test("deno task train --help lists the flags", async () => {
  const { code, stdout } = await runTrain(["--help"]);
  assert.equal(code, 0);
  for (
    const flag of [
      "--workers",
      "--batch-size",
      "--lr",
      "--backend",
      "--preset",
      "--metrics",
      "--plot",
    ]
  ) {
    assert.ok(stdout.includes(flag), `${flag} missing from --help`);
  }
});

Deno.test("deno task train --summary prints d2l's output shape of each layer", async () => {
  const { code, stdout } = await runTrain(["--summary"]);
  assert.equal(code, 0);
  const shapes = [...stdout.matchAll(/output (\S+)/g)].map((m) => m[1]);
  assert.deepEqual(shapes, [
    "54×54×96",
    "26×26×96",
    "26×26×256",
    "12×12×256",
    "12×12×384",
    "5×5×384",
    "5×5×384",
    "5×5×10",
    "1×1×10",
    "10",
  ]);
  assert.match(stdout, /total: 1,992,166 parameters/);
});

Deno.test("bad input: one line on stderr, exit code 2, no stack trace", async (t) => {
  const dataDir = await Deno.makeTempDir();
  const corruptDir = await Deno.makeTempDir();
  await writeTinyDataset(dataDir);
  await writeTinyDataset(corruptDir);
  await Deno.writeTextFile(`${corruptDir}/train-labels-idx1-ubyte.gz`, "garbage");
  const fifo = `${dataDir}/fifo`;
  await new Deno.Command("mkfifo", { args: [fifo] }).output();
  const otherRun = `${dataDir}/other-run`;
  await Deno.mkdir(otherRun);
  await Deno.writeTextFile(`${otherRun}/ckpt-0001-000000.msgpack`, "another run's");
  const cases: [string[], RegExp][] = [
    [["--workers", "0"], /workers must be a positive integer, got 0/],
    [["--workers", "1e9"], /workers must be at most 256, got 1000000000/],
    [["--workers", "two"], /--workers must be an integer, got "two"/],
    [["--lr=-0.1"], /learning rate must be a positive number, got -0.1/],
    [["--lr", "-0.1"], /Option '--lr' argument is ambiguous\..* use '--lr=-XYZ'/],
    [["--lr", "NaN"], /--lr must be a number, got "NaN"/],
    [["--lr", "nan"], /--lr must be a number, got "nan"/],
    [["--workers", "4", "--batch-size", "2"], /batch size 2 is smaller than the 4 workers/],
    [["--workers", "2", "--shards", "3"], /shards 3 is not a multiple of the 2 workers/],
    [["--shards", "0"], /shards must be a positive integer, got 0/],
    [["--bogus"], /Unknown option '--bogus'/],
    [["--epochs"], /--epochs/],
    [["--preset", "fast"], /--preset must be one of d2l, quick, resnet18-quick, got "fast"/],
    [["--backend", "cuda"], /--backend must be one of webgpu, cpu, got "cuda"/],
    [["--kernels", "cudnn"], /--kernels must be one of fast, tfjs, got "cudnn"/],
    [["--input-size", "50"], /input size must be an integer of at least 67/],
    [["--head", "ones"], /head must be one of random, zero, got "ones"/],
    [["--model", "lenet", "--head", "zero"], /head applies to NiN only, not to model "lenet"/],
    [
      ["--optimizer", "rmsprop"],
      /optimizer: name must be one of sgd, adam, got \{"name":"rmsprop"\}/,
    ],
    [["--optimizer", "adam", "--momentum", "0.9"], /optimizer: adam takes no momentum/],
    [["--nesterov"], /optimizer: nesterov needs a momentum above 0/],
    [["--momentum", "1.5"], /momentum must be a number in \[0, 1\)/],
    [["--schedule", "step"], /--schedule "step": step needs every=/],
    [["--schedule", "cosine:warm=1"], /"warm=1" is not one of warmup=, every=, gamma=, min=/],
    [["--data-dir", "/nonexistent/fm"], /not a directory; put the four Fashion-MNIST files/],
    [["--data-dir", corruptDir], /train-labels-idx1-ubyte\.gz: not a valid gzip file/],
    [
      ["--data-dir", dataDir, "--metrics", "/nonexistent/dir/m.jsonl"],
      /--metrics .*does not exist/,
    ],
    // Output locations are checked by writing there, before any work.
    // /sys: not writable even by root, and out of reach of these permissions too.
    [
      ["--data-dir", dataDir, "--metrics", "/sys/m.jsonl"],
      /^error: --metrics \/sys\/m\.jsonl: cannot /,
    ],
    [["--data-dir", dataDir, "--plot", "/sys/p.svg"], /^error: --plot \/sys\/p\.svg: cannot /],
    [["--data-dir", dataDir, "--export", "/sys"], /^error: --export \/sys: cannot /],
    [["--data-dir", dataDir, "--export", "/sys/model"], /^error: --export \/sys\/model: cannot /],
    // Reads bounded by the file: devices and FIFOs are not read at all.
    [
      ["--data-dir", dataDir, "--resume", "/dev/zero"],
      /^error: checkpoint \/dev\/zero is not a regular file$/,
    ],
    [["--data-dir", dataDir, "--resume", fifo], /^error: checkpoint .*fifo is not a regular file$/],
    [
      ["--data-dir", dataDir, "--checkpoint-dir", "README.md"],
      /^error: checkpoint directory README\.md cannot be created: it exists and is not a directory$/,
    ],
    [
      ["--data-dir", dataDir, "--checkpoint-dir", otherRun],
      /holds 1 checkpoint\(s\) of another run \(newest ckpt-0001-000000\.msgpack\): continue that run with --resume, choose another --checkpoint-dir, or pass --overwrite/,
    ],
  ];
  try {
    for (const [args, pattern] of cases) {
      await t.step(args.join(" "), async () => {
        const { code, stdout, stderr } = await runTrain(args);
        assert.equal(code, 2, `exit code for ${args.join(" ")}: stderr ${stderr}`);
        const lines = stderr.trimEnd().split("\n");
        assert.equal(lines.length, 1, `expected one line, got:\n${stderr}`);
        assert.match(lines[0], /^error: /);
        assert.match(lines[0], pattern);
        assert.equal(stdout, "");
      });
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
    await Deno.remove(corruptDir, { recursive: true });
  }
});

Deno.test("a short run on 2 workers prints d2l's lines and writes the metrics and the plot", async () => {
  await withTempDir(async (dir) => {
    await writeTinyDataset(dir, { train: 48, test: 16 });
    const { code, stdout, stderr } = await runTrain([
      "--data-dir",
      dir,
      "--workers",
      "2",
      "--epochs",
      "2",
      "--batch-size",
      "16",
      "--input-size",
      "67",
      "--width",
      "0.125",
      "--metrics",
      `${dir}/metrics.jsonl`,
      "--plot",
      `${dir}/curves.svg`,
    ]);
    assert.equal(code, 0, stderr);
    const lines = stdout.trimEnd().split("\n");
    assert.match(
      lines[0],
      /^NiN \(36,646 parameters, 67×67 input, width 0\.125\) on 48 training \/ 16 test examples$/,
    );
    assert.match(
      lines[1],
      /^2 worker\(s\) on webgpu \(fast kernels\): .+ through (Vulkan|GL|Metal|Direct3D 12); batch 16 \(8 per worker\), lr 0\.1, optimizer sharded over the 2 workers, 3 steps per epoch$/,
    );
    const epoch =
      /^epoch (\d)\/2: loss \d+\.\d{3}, train acc \d\.\d{3}, test acc \d\.\d{3}, \d+\.\d examples\/sec, \d+\.\d s$/;
    assert.equal(lines[2].match(epoch)?.[1], "1");
    assert.equal(lines[3].match(epoch)?.[1], "2");
    assert.match(lines[4], /^loss \d+\.\d{3}, train acc \d\.\d{3}, test acc \d\.\d{3}$/);
    assert.match(lines[5], /^\d+\.\d examples\/sec on .+$/);
    assert.equal(lines.length, 6);
    assert.match(
      stderr,
      /^note: .*train-images-idx3-ubyte\.gz.* differ from the official Fashion-MNIST files \(SHA-256\); using them as given$/m,
    );

    const records = (await Deno.readTextFile(`${dir}/metrics.jsonl`)).trimEnd().split("\n")
      .map((line) => JSON.parse(line));
    assert.deepEqual(records.map((r) => r.epoch), [1, 2]);
    for (const key of ["loss", "trainAcc", "testAcc", "examplesPerSec", "seconds"]) {
      assert.equal(typeof records[1][key], "number", key);
    }
    assert.equal(lines[3].includes(records[1].loss.toFixed(3)), true);
    const svg = await Deno.readTextFile(`${dir}/curves.svg`);
    assert.match(svg, /^<svg /);
    assert.equal((svg.match(/<polyline /g) ?? []).length, 3);
    for (const label of ["train loss", "train acc", "test acc"]) assert.ok(svg.includes(label));
  });
});

Deno.test({
  name: "more workers than cores on a software adapter: one note names the count that is as fast",
  ignore: await ignoredWithout("software-adapter"),
  fn: () =>
    withTempDir(async (dir) => {
      await writeTinyDataset(dir, { train: 24, test: 8 });
      const cores = navigator.hardwareConcurrency;
      const { code, stderr } = await runTrain([
        "--data-dir",
        dir,
        "--model",
        "lenet",
        "--workers",
        String(cores + 1),
        "--epochs",
        "1",
        "--batch-size",
        String(cores + 1),
      ]);
      assert.equal(code, 0, stderr);
      const notes = stderr.split("\n").filter((line) => line.includes("workers share"));
      assert.deepEqual(notes, [
        `note: ${
          cores + 1
        } workers share ${cores} core(s) on a software adapter: the extra workers ` +
        `take turns and add no speed; --workers ${cores} is as fast here`,
      ]);
    }),
});

Deno.test({
  name:
    "several workers on llvmpipe through GL: the start-up line names the path, one warning says how to fix it",
  ignore: await ignoredWithout("llvmpipe-through-gl"),
  fn: () =>
    withTempDir(async (dir) => {
      await writeTinyDataset(dir, { train: 8, test: 4 });
      const flags = ["--data-dir", dir, "--epochs", "1", "--batch-size", "4"];
      const run = (workers: string) =>
        runScript("scripts/train.ts", [...flags, "--workers", workers, "--preset", "quick"], {
          env: { DENO_WEBGPU_BACKEND: "gl" },
        });
      const two = await run("2");
      assert.equal(two.code, 0, two.stderr);
      assert.match(two.stdout, /llvmpipe .* through GL;/);
      const warnings = two.stderr.split("\n").filter((line) => line.startsWith("warning: "));
      assert.equal(warnings.length, 1, two.stderr);
      assert.match(
        warnings[0],
        /^warning: llvmpipe .* runs through GL, which serialises the workers' GPU work: 2 workers add little or no speed over 1\. Install Mesa's Vulkan driver .*apt-get install mesa-vulkan-drivers libvulkan1/,
      );
      const one = await run("1");
      assert.equal(one.code, 0, one.stderr);
      assert.doesNotMatch(
        one.stderr,
        /^warning: /m,
        "one worker has nothing to be serialised with",
      );
    }),
});

Deno.test("Ctrl-C (exit 130) and SIGTERM (exit 143) write a checkpoint at a step boundary; --resume finishes the run", async (t) => {
  for (const [signal, exitCode] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    await t.step(signal, () => interruptAndResume(signal, exitCode));
  }
});

async function interruptAndResume(signal: "SIGINT" | "SIGTERM", exitCode: number): Promise<void> {
  await withTempDir(async (dir) => {
    await writeTinyDataset(dir, { train: 48, test: 8 });
    const flags = [...tinyRunFlags(dir), "--workers", "2", "--metrics", `${dir}/metrics.jsonl`];
    const { code, stderr } = await interruptTrain(flags, "epoch 1/3:", signal);
    assert.equal(code, exitCode, stderr);
    assert.match(
      stderr,
      new RegExp(`^${signal}: stopping at the next step boundary to write a checkpoint`, "m"),
    );
    assert.match(
      stderr,
      /interrupted after 1 epoch\(s\) and \d step\(s\); checkpoint .*ckpt-0001-00000\d\.msgpack/,
    );

    const resumed = await runTrain([...flags, "--resume"]);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(
      resumed.stdout,
      /^resuming from .*ckpt-0001-00000\d\.msgpack: 1 epoch\(s\) and \d step\(s\) done$/m,
    );
    assert.match(resumed.stdout, /^epoch 2\/3: /m);
    assert.match(resumed.stdout, /^epoch 3\/3: /m);
    assert.doesNotMatch(resumed.stdout, /^epoch 1\/3: /m);
    const epochs = (await Deno.readTextFile(`${dir}/metrics.jsonl`)).trimEnd().split("\n")
      .map((line) => JSON.parse(line).epoch);
    assert.deepEqual(epochs, [1, 2, 3], "the metrics file holds the epochs of both runs");
  });
}
