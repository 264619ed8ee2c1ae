/**
 * The messages of an elastic run (`serve.elastic`) between the serving
 * coordinator and a member: a worker thread of its own, another Deno process
 * (`--join`), or a browser tab. The same messages travel over a thread's
 * channel and over a WebSocket (ws_channel.ts).
 *
 * The coordinator holds the run's state (weights, optimizer) and hands out
 * work one shard at a time; a member only computes:
 *
 * ```
 * coordinator → member   memberInit    the model to build
 * member → coordinator   memberReady   its device and the model's sizes (its initial
 *                                      weights when asked: the run's first member)
 * coordinator → member   weights       the weights of version `version` (after each update)
 * coordinator → member   work          one shard of a step: its examples and dropout seed
 * member → coordinator   result        the shard's gradient (and batch statistics), loss, correct
 * coordinator → member   evalWork      a batch of the test set
 * member → coordinator   evalResult    how many it got right
 * coordinator → member   checksum      / member → coordinator checksum of its weights
 * member → coordinator   error         what went wrong; it stops
 * ```
 *
 * A member never gets a file name or a path: everything it computes on
 * arrives in these messages.
 *
 * @module
 */

import type { Message } from "../../collective/channel.ts";
import type { Batch } from "../../data/batches.ts";
import type { KernelSet } from "../../kernels/mod.ts";
import type { ModelConfig } from "../../model/registry.ts";
import type { Normalization } from "../../data/dataset.ts";
import type { BackendName, DeviceInfo } from "./backend.ts";
import type { WireFormat } from "./options.ts";

/** What a member builds its replica from; the same for every member of a run. */
export interface MemberConfig {
  /** TensorFlow.js backend. */
  backend: BackendName;
  /** The model (a built-in one, for a member outside this process). */
  model: ModelConfig;
  /** Input normalisation, if any. */
  normalize: Normalization | undefined;
  /** WebGPU kernel set. */
  kernels: KernelSet;
  /** `"bf16"`: the member rounds its gradients to bfloat16. */
  wire: WireFormat;
}

/** Coordinator → member: build this replica. */
export interface MemberInitMessage extends Message {
  type: "memberInit";
  config: MemberConfig;
  /** Send the replica's initial weights back (the run's first member, on a fresh start). */
  sendWeights: boolean;
}

/** Member → coordinator: built; its device and the model's sizes. */
export interface MemberReadyMessage extends Message {
  type: "memberReady";
  device: DeviceInfo;
  /** Length of a weight vector: trainable weights, statistics and frozen ones. */
  numWeights: number;
  /** Trainable weights: what the optimizer updates (the first of the vector). */
  numParams: number;
  /** Length of a result's gradient: trainable weights, then statistics. */
  numReduced: number;
  /** Where each statistic sits in the weight vector, in the order a gradient carries them. */
  statistics: { offset: number; size: number }[];
  /** The model's input, `[height, width, channels]`. */
  inputShape: [number, number, number];
  /** Classes the model tells apart. */
  numClasses: number;
  /** The replica's initial weights, when asked for. */
  weights?: Float32Array<ArrayBuffer>;
}

/** Coordinator → member: from now on, compute with these weights. */
export interface MemberWeightsMessage extends Message {
  type: "weights";
  version: number;
  weights: Float32Array<ArrayBuffer>;
}

/** Coordinator → member: one shard of a global batch. */
export interface WorkMessage extends Message {
  type: "work";
  /** Names the result. */
  id: number;
  /** The weights version to compute with (sent before, in a `weights` message). */
  version: number;
  /** Its examples. */
  batch: Batch;
  /** The seed of its dropout masks. */
  dropoutSeed: number;
}

/** Member → coordinator: a shard's result. */
export interface ResultMessage extends Message {
  type: "result";
  id: number;
  /** `numReduced` values: the gradient of the mean loss, then the batch's statistics. */
  gradients: Float32Array<ArrayBuffer>;
  lossSum: number;
  correct: number;
  count: number;
}

/** Coordinator → member: count the correct predictions on a test batch. */
export interface EvalWorkMessage extends Message {
  type: "evalWork";
  id: number;
  version: number;
  batch: Batch;
}

/** Member → coordinator: a test batch's count. */
export interface EvalResultMessage extends Message {
  type: "evalResult";
  id: number;
  correct: number;
  count: number;
}

/** Coordinator → member: send the checksum of your weights. */
export interface ChecksumRequest extends Message {
  type: "checksum";
  version: number;
}

/** Member → coordinator: the checksum of the weights of `version`. */
export interface ChecksumMessage extends Message {
  type: "checksum";
  version: number;
  checksum: string;
}

/** Member → coordinator: it failed and stops. */
export interface MemberErrorMessage extends Message {
  type: "error";
  message: string;
  /** The model cannot be built as configured: the user's to fix. */
  model?: boolean;
}

/** A change of an elastic run's membership, as `serve.elastic.onMember` is told it. */
export type MemberEvent =
  /** A member built its replica and takes work from now on. */
  | { type: "joined"; name: string; device: string }
  /**
   * A member left or was dropped (`reason` says which and why); its work went to others.
   * `shards`: the shards it computed; `counted`: those whose result came first and counted.
   */
  | { type: "left"; name: string; reason: string; shards: number; counted: number }
  /** Fewer members than `minMembers`: the run waits at a step boundary. */
  | { type: "paused"; members: number; minMembers: number }
  /** Enough members again: the run goes on. */
  | { type: "resumed"; members: number }
  /**
   * A member's result was compared with this process's for the same work
   * (`serve.elastic.verify`): `difference` is relative (0: equal), and over
   * `tolerance` the member is dropped (a `left` event follows).
   */
  | { type: "verified"; name: string; difference: number; tolerance: number };
