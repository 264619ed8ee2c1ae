import assert from "node:assert/strict";
import { DistributedSampler } from "../lib/data/sampler.ts";
import { batchShard, gatherBatch, stepsPerEpoch } from "../lib/data/batches.ts";

function shares(
  size: number,
  worldSize: number,
  options: { dropLast?: boolean; epoch?: number; shuffle?: boolean } = {},
) {
  return Array.from({ length: worldSize }, (_, rank) => {
    const sampler = new DistributedSampler(size, { rank, worldSize, seed: 7, ...options });
    sampler.setEpoch(options.epoch ?? 0);
    return sampler.indices();
  });
}

Deno.test("DistributedSampler gives each rank a disjoint equal share that covers the data", () => {
  for (const worldSize of [1, 2, 3, 4, 8]) {
    const all = shares(96, worldSize);
    for (const share of all) assert.equal(share.length, 96 / worldSize);
    assert.deepEqual(all.flat().sort((a, b) => a - b), Array.from({ length: 96 }, (_, i) => i));
  }
});

Deno.test("DistributedSampler pads by repeating the start of the order (dropLast false)", () => {
  const all = shares(10, 4); // total size 12: two indices repeat
  assert.deepEqual(all.map((s) => s.length), [3, 3, 3, 3]);
  const flat = all.flat();
  assert.equal(new Set(flat).size, 10);
  const sampler = new DistributedSampler(10, { rank: 0, worldSize: 4, seed: 7 });
  assert.equal(sampler.totalSize, 12);
  assert.equal(sampler.numSamples, 3);
  // Positions 10 and 11 of the padded order are positions 0 and 1: ranks 2 and 3's last index
  // equals ranks 0 and 1's first.
  assert.equal(all[2][2], all[0][0]);
  assert.equal(all[3][2], all[1][0]);
});

Deno.test("DistributedSampler pads even when the data set is smaller than the world", () => {
  const all = shares(2, 5);
  assert.deepEqual(all.map((s) => s.length), [1, 1, 1, 1, 1]);
  assert.deepEqual(new Set(all.flat()), new Set([0, 1]));
});

Deno.test("DistributedSampler drops the tail when dropLast is true", () => {
  const all = shares(10, 4, { dropLast: true });
  assert.deepEqual(all.map((s) => s.length), [2, 2, 2, 2]);
  assert.equal(new Set(all.flat()).size, 8);
});

Deno.test("DistributedSampler shuffles per epoch, identically on every rank, reproducibly", () => {
  const epoch0 = shares(50, 2, { epoch: 0 });
  const epoch0Again = shares(50, 2, { epoch: 0 });
  const epoch1 = shares(50, 2, { epoch: 1 });
  assert.deepEqual(epoch0, epoch0Again);
  assert.notDeepEqual(epoch0, epoch1);
  assert.notDeepEqual(epoch0[0], Array.from({ length: 25 }, (_, i) => 2 * i));
  const other = new DistributedSampler(50, { rank: 0, worldSize: 2, seed: 8 }).indices();
  assert.notDeepEqual(other, epoch0[0]);
});

Deno.test("DistributedSampler without shuffle strides over the data in order", () => {
  assert.deepEqual(shares(7, 2, { shuffle: false }), [[0, 2, 4, 6], [1, 3, 5, 0]]);
});

Deno.test("DistributedSampler rejects impossible ranks and sizes", () => {
  assert.throws(() => new DistributedSampler(10, { rank: 2, worldSize: 2 }), RangeError);
  assert.throws(() => new DistributedSampler(10, { rank: 0, worldSize: 0 }), RangeError);
  assert.throws(() => new DistributedSampler(-1, { rank: 0, worldSize: 1 }), RangeError);
  assert.throws(() => new DistributedSampler(10, { rank: 0.5, worldSize: 2 }), RangeError);
});

Deno.test("batchShard: global batch s is positions [sB, (s+1)B) of the order, for any world size", () => {
  const size = 45;
  const batchSize = 16;
  const reference = new DistributedSampler(size, { rank: 0, worldSize: 1, seed: 3 }).indices();
  for (const worldSize of [1, 2, 3, 4, 5]) {
    const ranks = Array.from(
      { length: worldSize },
      (_, rank) => new DistributedSampler(size, { rank, worldSize, seed: 3 }),
    );
    const total = ranks[0].totalSize;
    const steps = stepsPerEpoch(total, { batchSize });
    for (let step = 0; step < steps; step++) {
      const parts = ranks.map((sampler, rank) =>
        batchShard(sampler.indices(), step, { rank, worldSize, batchSize })
      );
      const sizes = parts.map((p) => p.length);
      assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `uneven shares ${sizes}`);
      const expected = Array.from(
        { length: Math.min(batchSize, total - step * batchSize) },
        (_, i) => reference[(step * batchSize + i) % size],
      );
      assert.deepEqual(
        parts.flat().sort((a, b) => a - b),
        expected.sort((a, b) => a - b),
        `world ${worldSize}, step ${step}`,
      );
    }
  }
});

Deno.test("stepsPerEpoch counts a short last batch", () => {
  assert.equal(stepsPerEpoch(60000, { batchSize: 128 }), 469);
  assert.equal(stepsPerEpoch(256, { batchSize: 128 }), 2);
});

Deno.test("gatherBatch copies images and labels in index order", () => {
  const dataset = {
    images: Uint8Array.from({ length: 3 * 4 }, (_, i) => i),
    labels: new Uint8Array([5, 6, 7]),
    count: 3,
    rows: 2,
    cols: 2,
  };
  const batch = gatherBatch(dataset, [2, 0, 2]);
  assert.deepEqual([...batch.images], [8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11]);
  assert.deepEqual([...batch.labels], [7, 5, 7]);
  assert.deepEqual([batch.count, batch.rows, batch.cols], [3, 2, 2]);
});
