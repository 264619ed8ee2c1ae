/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />

/**
 * Worker entry point of the all-reduce benchmark (`deno task bench`);
 * everything it does is in `lib/bench/all_reduce_bench.ts`.
 *
 * @module
 */

import { PostMessageChannel } from "../lib/collective/channel.ts";
import { serveAllReduceBench } from "../lib/bench/all_reduce_bench.ts";

await serveAllReduceBench(new PostMessageChannel(self));
