/**
 * Worker entry point of the all-reduce benchmark (`deno task bench`), in a
 * thread started by `lib/bench/all_reduce_bench.ts`, where everything it does
 * is.
 *
 * @module
 */

import { parentChannel } from "../lib/collective/worker_thread.ts";
import { serveAllReduceBench } from "../lib/bench/all_reduce_bench.ts";

await serveAllReduceBench(parentChannel({ label: "all-reduce bench worker" }));
