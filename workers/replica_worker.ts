/**
 * Worker entry point: one data-parallel replica, in a thread started by
 * `train()` (see `lib/collective/worker_thread.ts`); everything it does is in
 * `lib/train/worker/replica_service.ts`.
 *
 * @module
 */

import { parentChannel } from "../lib/collective/worker_thread.ts";
import { serveReplica } from "../lib/train/worker/replica_service.ts";

await serveReplica(parentChannel({ label: "replica worker" }));
