/**
 * Sharding a data set across data-parallel replicas, with the semantics of
 * PyTorch's `torch.utils.data.distributed.DistributedSampler`.
 *
 * @module
 */

import { randomPermutation } from "../util/random.ts";

/** Options for {@linkcode DistributedSampler}. */
export interface DistributedSamplerOptions {
  /** This replica's rank, `0 ≤ rank < worldSize`. */
  rank: number;
  /** Number of replicas. */
  worldSize: number;
  /** Draw a new random order every epoch. Default true. */
  shuffle?: boolean;
  /** Seed of the shuffle; must be the same on every replica. Default 0. */
  seed?: number;
  /**
   * Drop the tail so the data divides evenly across replicas. When false
   * (default), the order is padded by repeating its first indices instead.
   */
  dropLast?: boolean;
}

/**
 * Gives one replica its disjoint, equal share of a data set each epoch.
 *
 * Every replica draws the same seeded permutation of `0 … datasetSize-1`
 * (re-drawn per epoch with {@linkcode DistributedSampler.setEpoch}), pads it by
 * repetition to a multiple of `worldSize` (or trims it when `dropLast`), and
 * keeps every `worldSize`-th index starting at `rank`. The shares of all
 * ranks are disjoint positions of one order and each has
 * {@linkcode DistributedSampler.numSamples} indices.
 *
 * @example Two replicas over ten examples
 * ```ts
 * import assert from "node:assert/strict";
 * import { DistributedSampler } from "./sampler.ts";
 *
 * const rank0 = new DistributedSampler(10, { rank: 0, worldSize: 2, seed: 1 });
 * const rank1 = new DistributedSampler(10, { rank: 1, worldSize: 2, seed: 1 });
 * rank0.setEpoch(3);
 * rank1.setEpoch(3);
 * const all = [...rank0.indices(), ...rank1.indices()].sort((a, b) => a - b);
 * assert.ok(all.join() === "0,1,2,3,4,5,6,7,8,9");
 * ```
 */
export class DistributedSampler {
  /** Number of examples in the data set. */
  readonly datasetSize: number;
  /** This replica's rank. */
  readonly rank: number;
  /** Number of replicas. */
  readonly worldSize: number;
  /** Whether the order is shuffled. */
  readonly shuffle: boolean;
  /** Shuffle seed. */
  readonly seed: number;
  /** Whether the tail is dropped instead of padded. */
  readonly dropLast: boolean;
  /** Number of indices each replica gets per epoch. */
  readonly numSamples: number;
  /** `numSamples × worldSize`: length of the padded (or trimmed) order. */
  readonly totalSize: number;
  #epoch = 0;

  /** Creates the sampler of replica `rank` over `datasetSize` examples. */
  constructor(datasetSize: number, options: DistributedSamplerOptions) {
    const { rank, worldSize } = options;
    if (!Number.isInteger(datasetSize) || datasetSize < 0) {
      throw new RangeError(`datasetSize must be a non-negative integer, got ${datasetSize}`);
    }
    if (!Number.isInteger(worldSize) || worldSize < 1) {
      throw new RangeError(`worldSize must be a positive integer, got ${worldSize}`);
    }
    if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
      throw new RangeError(`rank must be an integer in [0, ${worldSize - 1}], got ${rank}`);
    }
    this.datasetSize = datasetSize;
    this.rank = rank;
    this.worldSize = worldSize;
    this.shuffle = options.shuffle ?? true;
    this.seed = options.seed ?? 0;
    this.dropLast = options.dropLast ?? false;
    this.numSamples = this.dropLast && datasetSize % worldSize !== 0
      ? Math.floor(datasetSize / worldSize)
      : Math.ceil(datasetSize / worldSize);
    this.totalSize = this.numSamples * worldSize;
  }

  /** The epoch whose order {@linkcode DistributedSampler.indices} returns. */
  get epoch(): number {
    return this.#epoch;
  }

  /** Selects the epoch; call it on every replica before each epoch. */
  setEpoch(epoch: number): void {
    this.#epoch = epoch;
  }

  /** This replica's indices for the current epoch, in the order to visit them. */
  indices(): number[] {
    const n = this.datasetSize;
    let order = this.shuffle
      ? randomPermutation(n, (this.seed + this.#epoch) >>> 0)
      : Array.from({ length: n }, (_, i) => i);
    if (this.totalSize > n) {
      const padded = order.slice();
      while (padded.length < this.totalSize) {
        padded.push(...order.slice(0, this.totalSize - padded.length));
      }
      order = padded;
    } else {
      order = order.slice(0, this.totalSize);
    }
    const mine: number[] = [];
    for (let i = this.rank; i < this.totalSize; i += this.worldSize) mine.push(order[i]);
    return mine;
  }
}
