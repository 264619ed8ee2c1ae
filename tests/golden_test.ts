/**
 * Golden checksums: the SHA-256 of NiN's weights after a fixed short run,
 * pinned. Every refactor of the trainer, the kernels, the optimizer or the
 * all-reduce must leave them as they are; a change that alters the
 * arithmetic on purpose changes them here, in the same commit, and says why.
 *
 * Pinned at 1693bc8 (before the 0.2 refactor) and unchanged since: NiN at 67
 * px, width ⅛, dropout 0.5, 2 workers, 2 shards, batch 16, 4 steps, seed 0,
 * lr 0.1, on generated image-like data.
 *
 * @module
 */

import assert from "node:assert/strict";
import { train } from "../mod.ts";
import { imageLikeDataset } from "./helpers.ts";
import { ignoredWithout } from "./skips.ts";

const RUN = {
  model: { name: "nin", inputSize: 67, width: 0.125 },
  distributed: { workers: 2, shards: 2 },
  batchSize: 16,
  epochs: 1,
  seed: 0,
  lr: 0.1,
  data: { train: imageLikeDataset(64, 1), test: imageLikeDataset(16, 2) },
} as const;

Deno.test("golden: NiN's weights after a fixed short run on the cpu backend (the same bits on every machine)", async () => {
  const { checksum } = await train({ ...RUN, backend: "cpu" });
  assert.equal(checksum, "e7c053934e667c8d0522cb9b0d950b3c3bd740565bf8a4207247792c21333de8");
});

Deno.test({
  name: "golden: NiN's weights after a fixed short run on WebGPU, this library's kernels",
  ignore: await ignoredWithout("llvmpipe-15"),
  async fn() {
    const { checksum } = await train({ ...RUN, backend: "webgpu", kernels: "fast" });
    assert.equal(checksum, "8f79fa2a54fda3a265140246127abef70c0a0fb3b64e6950b718c5b816da2536");
  },
});
