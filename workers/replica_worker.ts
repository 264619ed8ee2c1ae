/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />

/**
 * Worker entry point: one data-parallel NiN replica. Spawned by `train()`;
 * everything it does is in `lib/train/replica_service.ts`.
 *
 * @module
 */

import { PostMessageChannel } from "../lib/collective/channel.ts";
import { serveReplica } from "../lib/train/worker/replica_service.ts";

await serveReplica(new PostMessageChannel(self, { label: self.name }));
