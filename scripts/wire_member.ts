/**
 * One host's process of `deno task bench --only wire` (see
 * `lib/bench/wire_bench.ts`), started inside its network namespace: joins the
 * TCP group as `--rank` of `--size` at `--addr`:`--port` (token in
 * DDP_TOKEN), averages a vector of `--length` float32 values (as bfloat16
 * with `--bf16`) once untimed,
 * then `--repeats` times `--ops` averages; rank 0 prints the ms per average
 * of each repetition as JSON.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { importToken } from "../lib/collective/tcp/auth.ts";
import { TcpProcessGroup } from "../lib/collective/tcp/tcp_process_group.ts";

const { values } = parseArgs({
  options: {
    rank: { type: "string" },
    size: { type: "string" },
    addr: { type: "string" },
    port: { type: "string" },
    length: { type: "string" },
    ops: { type: "string" },
    repeats: { type: "string" },
    bf16: { type: "boolean" },
  },
});
const [rank, size, length, ops, repeats] = [
  values.rank,
  values.size,
  values.length,
  values.ops,
  values.repeats,
]
  .map(Number);
const group = await TcpProcessGroup.connect({
  rank,
  size,
  masterAddr: values.addr ?? "127.0.0.1",
  masterPort: Number(values.port),
  key: await importToken({ token: Deno.env.get("DDP_TOKEN") }),
});
const data = Float32Array.from({ length }, (_, i) => Math.sin(i + rank));
const out = new Float32Array(length);
const bf16Length = values.bf16 ? length : 0;
await group.average([{ data, weight: 1 }], { out, bf16Length });
const msPerAverage: number[] = [];
for (let r = 0; r < repeats; r++) {
  await group.barrier();
  const started = performance.now();
  for (let i = 0; i < ops; i++) await group.average([{ data, weight: 1 }], { out, bf16Length });
  msPerAverage.push((performance.now() - started) / ops);
}
await group.barrier();
if (rank === 0) console.log(JSON.stringify({ msPerAverage }));
await group.close();
