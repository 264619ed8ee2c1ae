/**
 * One process of the `mpi` rows of `deno task bench --only allreduce` (see
 * `lib/bench/all_reduce_bench.ts`), started by `mpirun`: joins the MPI
 * process group and holds a vector of `--length` float32 values. Rank 0
 * reads commands from its stdin (mpirun passes its own) and broadcasts them:
 * `go N` times N averages on every rank and rank 0 prints `done MS` (the
 * slowest rank's); `stop` ends every rank.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { MpiProcessGroup } from "../lib/collective/mpi/mpi_process_group.ts";
import { lines } from "../lib/util/lines.ts";

const { values } = parseArgs({ options: { length: { type: "string" } } });
const length = Number(values.length);
if (!Number.isInteger(length) || length < 1) throw new Error(`--length ${values.length}`);
const group = await MpiProcessGroup.connect();
const data = new Float32Array(length).fill(group.rank + 1);
const weight = group.rank + 1;
// Rank 0's commands; the end of its stdin means stop.
const commands = group.rank === 0 ? lines(Deno.stdin.readable) : undefined;
const nextLine = async () => (await commands!.next()).value ?? "stop";
const encoder = new TextEncoder();
if (group.rank === 0) console.log("ready");
for (;;) {
  const mine = group.rank === 0 ? encoder.encode(await nextLine()) : undefined;
  const command = new TextDecoder().decode(await group.broadcast(mine));
  if (!command.startsWith("go ")) break;
  const ops = Number(command.slice(3));
  const started = performance.now();
  for (let i = 0; i < ops; i++) await group.average([{ data, weight }], { out: data });
  const ms = await group.exchange(performance.now() - started);
  if (group.rank === 0) console.log(`done ${Math.max(...ms)}`);
}
await group.close();
