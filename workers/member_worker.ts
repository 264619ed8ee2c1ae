/**
 * Worker entry point: one member of an elastic run (`serve.elastic`), in a
 * thread started by the serving coordinator or by a process that joined with
 * `--join`; everything it does is in `lib/train/worker/member_service.ts`.
 *
 * @module
 */

import { parentChannel } from "../lib/collective/worker_thread.ts";
import { serveMember } from "../lib/train/worker/member_service.ts";

await serveMember(parentChannel({ label: "member worker" }));
