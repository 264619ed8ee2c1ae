/**
 * One host's process of `deno task bench --only wire` (see
 * `lib/bench/wire_bench.ts`), started inside its network namespace: joins the
 * TCP group as `--rank` of `--size` at `--addr`:`--port` (token in
 * DDP_TOKEN), averages a vector of `--length` float32 values (as bfloat16
 * with `--bf16`) once untimed,
 * then `--repeats` times `--ops` averages; rank 0 prints the ms per average
 * of each repetition as JSON.
 *
 * With `--sockets` (and every host's address in `--addrs`), each "average"
 * is the bytes a float32 average sends instead, over plain TCP connections
 * between every two hosts: each host writes `8·length/size` bytes to every
 * other and reads as many from each, with no frames, no sums and no copies —
 * what this machine's sockets can do with that traffic, to compare.
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
    sockets: { type: "boolean" },
    addrs: { type: "string" },
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
let average: () => Promise<unknown>;
if (values.sockets) {
  const addrs = (values.addrs ?? "").split(",");
  const peers = await meshOfSockets({ rank, size, addrs, port: Number(values.port) + 1 });
  const bytes = Math.round((8 * length) / size);
  const [sent, received] = [new Uint8Array(1 << 19).fill(rank), new Uint8Array(1 << 19)];
  average = () =>
    Promise.all(peers.flatMap((conn) => [pump(conn, sent, bytes), drain(conn, received, bytes)]));
} else {
  const data = Float32Array.from({ length }, (_, i) => Math.sin(i + rank));
  const out = new Float32Array(length);
  const bf16Length = values.bf16 ? length : 0;
  average = () => group.average([{ data, weight: 1 }], { out, bf16Length });
}
await average();
const msPerAverage: number[] = [];
for (let r = 0; r < repeats; r++) {
  await group.barrier();
  const started = performance.now();
  for (let i = 0; i < ops; i++) await average();
  msPerAverage.push((performance.now() - started) / ops);
}
await group.barrier();
if (rank === 0) console.log(JSON.stringify({ msPerAverage }));
await group.close();

/** A TCP connection to every other host: each accepts from higher ranks, connects to lower. */
async function meshOfSockets(
  at: { rank: number; size: number; addrs: string[]; port: number },
): Promise<Deno.TcpConn[]> {
  const { rank, size, addrs, port } = at;
  const listener = Deno.listen({ hostname: addrs[rank], port });
  const accepted = (async () => {
    const conns: Deno.TcpConn[] = [];
    for (let q = rank + 1; q < size; q++) conns.push(await listener.accept());
    return conns;
  })();
  await group.barrier(); // everyone listens
  const connected: Deno.TcpConn[] = [];
  for (let q = 0; q < rank; q++) {
    connected.push(await Deno.connect({ hostname: addrs[q], port }));
  }
  const conns = [...connected, ...await accepted];
  listener.close();
  for (const conn of conns) conn.setNoDelay(true);
  return conns;
}

/** Writes `bytes` bytes to `conn`, from `buffer` over and over. */
async function pump(conn: Deno.Conn, buffer: Uint8Array, bytes: number): Promise<void> {
  for (let left = bytes; left > 0;) {
    left -= await conn.write(buffer.subarray(0, Math.min(left, buffer.length)));
  }
}

/** Reads `bytes` bytes from `conn` into `buffer`, over and over. */
async function drain(conn: Deno.Conn, buffer: Uint8Array, bytes: number): Promise<void> {
  for (let left = bytes; left > 0;) {
    const read = await conn.read(buffer.subarray(0, Math.min(left, buffer.length)));
    if (read === null) throw new Error("a peer closed its connection");
    left -= read;
  }
}
