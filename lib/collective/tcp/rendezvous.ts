/**
 * Finding the other processes of a job and connecting to them: the
 * rendezvous at rank 0 (as torchrun's `MASTER_ADDR:MASTER_PORT`), then a
 * ring and a mesh of authenticated links. It returns links; what travels on
 * them is the process group's business (`tcp_process_group.ts`).
 *
 * - Rank 0 listens at the master address. Every other rank connects
 *   (retrying until rank 0 is up), proves the shared token, and says `hello`
 *   with its rank, the world size, the job's configuration digest and the
 *   port of its own listener.
 * - Rank 0 handshakes every connection at once, each within its own deadline,
 *   so an idle or slow connection (a port scanner, an attacker without the
 *   token) delays nobody. It refuses a wrong token, world size, configuration
 *   or rank with one line each (to the refused process, and to `onNotice`).
 * - A rank that leaves before the group is complete (Ctrl-C, killed) frees
 *   its place, and may join again; one that joins while its earlier
 *   connection is still being closed is asked to retry. A refused joiner
 *   whose refusal may pass (its place still held, a handshake cut short)
 *   tries again with backoff until the rendezvous deadline.
 * - Once all are in, rank 0 sends every rank the table of addresses; rank `r`
 *   connects to rank `r + 1` (the last to rank 0: the ring) and to ranks
 *   1 … r − 2 (the rest of the mesh; rank 0's links serve for rank 0), each
 *   connection authenticated again.
 * - Whoever fails during the rendezvous tells those it is connected to, with
 *   the reason, so that they stop within seconds, not at their deadline.
 *
 * (Over 500 lines: rank 0's and a member's halves of one protocol, kept side
 * by side so that each message can be read with its answer.)
 *
 * @module
 */

import { PeerError } from "../process_group.ts";
import { acceptAuthenticated, AuthError, connectAuthenticated } from "./auth.ts";
import { FrameError, type FrameReader } from "./frame.ts";
import { type Hello, helloProblem, readHello, refuseAndClose, sendRaw } from "./hello.ts";
import { Link } from "./link.ts";
import type { Clock } from "../../util/clock.ts";

/** How to find the other processes. */
export interface RendezvousOptions {
  /** This process's rank. */
  rank: number;
  /** Number of processes. */
  size: number;
  /** Rank 0's host: rank 0 listens there, the others connect there. */
  masterAddr: string;
  /**
   * Rank 0's port. Rank 0 may give 0: it listens on a free port and reports
   * it to `onListening` (the others must be given that port).
   */
  masterPort: number;
  /** The shared secret (see `importToken`). */
  key: CryptoKey;
  /** A digest of what every process must agree on; a process with another is refused. */
  digest?: string;
  /** How long to wait for every rank to join. Default 600 s. */
  timeoutMs?: number;
  /** How long one connection's handshake (token and hello) may take. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** A peer that sends nothing (not even a heartbeat) for this long is dead. Default 60 s. */
  silenceMs?: number;
  /**
   * Told, one line each: rank 0, about connections it refused and ranks that
   * left; the others, once rank 0 admitted them.
   */
  onNotice?: (line: string) => void;
  /** Rank 0: told the port it listens on, once it does. */
  onListening?: (port: number) => void;
  /** Aborting stops the rendezvous. */
  signal?: AbortSignal;
  /** Where the links' time comes from. Default the real clock. */
  clock?: Clock;
}

/** What a rendezvous leaves a rank: its links to the others. */
export interface GroupLinks {
  /** Rank 0: a link per other rank (index = rank). Others: [rank 0's]. */
  control: (Link | undefined)[];
  /** The link to rank `r + 1` (the last rank's: to rank 0). */
  next: Link;
  /** The link from rank `r − 1` (rank 0's: from the last rank). */
  prev: Link;
  /** A link to every other rank (index = rank), for the direct reduce-scatter. */
  peers: (Link | undefined)[];
}

/** The rendezvous was stopped by its signal. */
export class InterruptedRendezvous extends Error {
  /** Creates the error. */
  constructor() {
    super("interrupted while waiting for the other processes");
    this.name = "InterruptedRendezvous";
  }
}

/** Connections rank 0 handshakes at once; beyond it, a new one is closed at once. */
const MAX_PENDING_HANDSHAKES = 256;

/**
 * Joins the group's other processes and returns this rank's links.
 * `onFailure` is told when a link fails afterwards. Throws a `PeerError`
 * (or an `InterruptedRendezvous`) naming what went wrong.
 *
 * @example Two ranks (here in one process, on loopback, rank 0 on a free port)
 * ```ts
 * import assert from "node:assert/strict";
 * import { importToken } from "./auth.ts";
 * import { rendezvous } from "./rendezvous.ts";
 *
 * const key = await importToken({ token: "a shared secret of some length" });
 * const port = Promise.withResolvers<number>();
 * const common = { size: 2, masterAddr: "127.0.0.1", key };
 * const onFailure = () => {};
 * const zero = rendezvous({ ...common, rank: 0, masterPort: 0, onListening: port.resolve }, onFailure);
 * const one = rendezvous({ ...common, rank: 1, masterPort: await port.promise }, onFailure);
 * const links = await Promise.all([zero, one]);
 * assert.equal(links[0].peers[1]?.peer.startsWith("rank 1"), true);
 * for (const { next, prev, control } of links) [next, prev, ...control].forEach((l) => l?.close());
 * ```
 */
export async function rendezvous(
  options: RendezvousOptions,
  onFailure: (error: PeerError) => void,
): Promise<GroupLinks> {
  const deadline = performance.now() + (options.timeoutMs ?? 600_000);
  return options.rank === 0
    ? await asRoot(options, { deadline, onFailure })
    : await asMember(options, { deadline, onFailure });
}

interface Run {
  deadline: number;
  onFailure: (error: PeerError) => void;
}

/** Rank 0: listen, admit every other rank once, send the table, close the ring. */
async function asRoot(options: RendezvousOptions, run: Run): Promise<GroupLinks> {
  const { size } = options;
  const silenceMs = options.silenceMs ?? 60_000;
  const listener = await listenWithRetry(options, run.deadline);
  const port = listener.addr.port;
  options.onListening?.(port);
  const control: (Link | undefined)[] = new Array(size).fill(undefined);
  const ringAddresses: { host: string; port: number }[] = new Array(size);
  const joined = () => control.filter(Boolean).length;
  let tableSent = false;
  let prev: Link | undefined;
  const complete = Promise.withResolvers<void>();
  complete.promise.catch(() => {}); // a failure is read from it below, once
  const notice = (line: string) => options.onNotice?.(line);
  const missing = () =>
    `rank(s) ${
      control.flatMap((link, r) => (r > 0 && !link ? [r] : [])).join(", ") || size - 1
    } did not join in time`;
  const stop = stopper(options.signal, run.deadline, () => {
    closeQuietly(listener);
    complete.reject(undefined);
  });
  /** A joined rank's link failed before the group was complete. */
  const leaving = (rank: number, link: Link) => (error: PeerError) => {
    if (control[rank] !== link) return;
    if (!tableSent) {
      control[rank] = undefined; // its place is free: it may join again
      notice(`rank ${rank} left before the group was complete (${error.message}); waiting for it`);
      return;
    }
    complete.reject(error); // the others are connecting to it already: the group fails
  };
  const admit = async (conn: Deno.TcpConn) => {
    const from = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
    const refuse = (reason: string, retry: boolean, reader?: FrameReader) => {
      notice(`refused a connection from ${from}: ${reason}`);
      void refuseAndClose(conn, { reason, retry }, reader);
    };
    let reader: FrameReader;
    let hello: Hello;
    try {
      const within = handshakeDeadline(options);
      reader = await acceptAuthenticated(conn, {
        key: options.key,
        peer: from,
        timeoutMs: within.left(),
      });
      hello = await readHello(reader, from, within.left());
    } catch (error) {
      if (!(error instanceof AuthError || error instanceof FrameError)) throw error;
      refuse(error.message, false);
      return;
    }
    if (tableSent && hello.purpose === "join") {
      refuse(
        `rank ${hello.rank} has already joined and the group is complete ` +
          "(two processes were given the same rank?)",
        false,
        reader,
      );
      return;
    }
    const problem = helloProblem(hello, { size, digest: options.digest ?? "", joined: control });
    if (problem) {
      refuse(problem.reason, problem.retry, reader);
      return;
    }
    const peer = `rank ${hello.rank} (${from})`;
    const link: Link = new Link(conn, reader, {
      peer,
      silenceMs,
      clock: options.clock,
      onFailure: (error) =>
        control[hello.rank] === link ? leaving(hello.rank, link)(error) : run.onFailure(error),
    });
    if (hello.purpose === "ring") {
      prev = link; // the last rank's ring connection: it has the table already
      complete.resolve();
      return;
    }
    control[hello.rank] = link;
    ringAddresses[hello.rank] = { host: conn.remoteAddr.hostname, port: hello.ringPort! };
    link.send({ type: "welcome" });
    if (joined() === size - 1) {
      tableSent = true;
      const table = ringAddresses.slice(1);
      for (const member of control) member?.send({ type: "table", table });
    }
  };
  try {
    const accepting = acceptEach(listener, admit, (error) => complete.reject(error));
    accepting.catch(() => complete.reject(undefined)); // the listener was closed
    try {
      await complete.promise;
    } catch (error) {
      const why = stop.reason();
      if (why instanceof InterruptedRendezvous) throw why;
      if (error instanceof Error) throw error;
      throw new PeerError(missing());
    }
  } catch (error) {
    // Whoever waits on rank 0 hears why it stops.
    const reason = (error as Error).message;
    for (const link of [...control, prev]) void link?.abort(reason);
    throw error;
  } finally {
    stop.clear();
    closeQuietly(listener);
  }
  // From now on a failure is the group's.
  const links = { control, prev: prev! };
  const next = await connectPeer(options, {
    to: 1,
    address: ringAddresses[1],
    silenceMs,
    onFailure: run.onFailure,
  });
  return { ...links, next, peers: control };
}

/** Rank r > 0: join at rank 0 (again while it may pass), learn the ring, connect the mesh. */
async function asMember(options: RendezvousOptions, run: Run): Promise<GroupLinks> {
  const { rank, size } = options;
  const silenceMs = options.silenceMs ?? 60_000;
  let why: string | undefined; // the last refusal that might have passed
  for (let delay = 100;; delay = Math.min(2000, delay * 2)) {
    const joined = await joinOnce(options, run, silenceMs).catch((error) => {
      if (why === undefined || !(error instanceof PeerError)) throw error;
      throw new PeerError(`${error.message} (before: ${why})`);
    });
    if (joined.links) return joined.links;
    why = joined.why;
    if (options.signal?.aborted) throw new InterruptedRendezvous();
    if (performance.now() + delay > run.deadline) {
      throw new PeerError(`rank 0 did not admit rank ${rank} of ${size} in time: ${why}`);
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

/**
 * One attempt at joining: the links, or why a retry may work (a refusal that
 * may pass, a handshake cut short). Throws when no retry can help.
 */
async function joinOnce(
  options: RendezvousOptions,
  run: Run,
  silenceMs: number,
): Promise<{ links?: GroupLinks; why?: string }> {
  const { rank, size, key } = options;
  const master = `rank 0 (${options.masterAddr}:${options.masterPort})`;
  const conn = await connectWithRetry(options, run.deadline);
  // The ring listener on the address this host reaches rank 0 from.
  const listener = Deno.listen({ hostname: conn.localAddr.hostname, port: 0 });
  let control: Link | undefined;
  const stop = stopper(options.signal, run.deadline, () => {
    closeQuietly(listener);
    closeQuietly(conn);
  });
  try {
    let reader: FrameReader;
    try {
      const within = handshakeDeadline(options);
      reader = await connectAuthenticated(conn, { key, peer: master, timeoutMs: within.left() });
    } catch (error) {
      if (stop.reason()) throw stop.reason();
      const message = (error as Error).message;
      // A wrong token is for good; a handshake that did not finish may be rank 0 at capacity.
      if (/refused the connection|does not know the token/.test(message)) {
        throw new PeerError(message);
      }
      closeQuietly(conn);
      return { why: message };
    }
    const hello: Hello = {
      purpose: "join",
      rank,
      size,
      digest: options.digest ?? "",
      ringPort: listener.addr.port,
    };
    await sendRaw(conn, { type: "hello", ...hello });
    control = new Link(conn, reader, {
      peer: master,
      silenceMs,
      clock: options.clock,
      onFailure: run.onFailure,
    });
    const joined = control;
    const answer = await Promise.race([joined.next("welcome"), joined.next("refused")]).catch(
      (error) => {
        throw stop.reason() ?? error;
      },
    );
    if (answer.header.type === "refused") {
      joined.close();
      const reason = `rank 0 refused this process: ${String(answer.header.reason)}`;
      if (answer.header.retry === true) return { why: reason };
      throw new PeerError(reason);
    }
    options.onNotice?.(`joined at ${master}; waiting for the other processes`);
    const tableFrame = await joined.next("table").catch((error) => {
      throw stop.reason() ?? error;
    });
    const table = tableFrame.header.table as { host: string; port: number }[];
    const to = (rank + 1) % size;
    const address = to === 0
      ? { host: options.masterAddr, port: options.masterPort }
      : table[to - 1];
    // Besides the ring and rank 0's links, the mesh: rank s connects to every rank 1..s−2.
    const expected = new Map<number, "ring" | "mesh">([[rank - 1, "ring"]]);
    for (let s = rank + 2; s < size; s++) expected.set(s, "mesh");
    const meshTargets = Array.from({ length: Math.max(0, rank - 2) }, (_, i) => i + 1);
    const target = { silenceMs, onFailure: run.onFailure };
    const [next, accepted, ...mesh] = await Promise.all([
      connectPeer(options, { ...target, to, address }),
      acceptPeers(listener, { options, expected, ...target }),
      ...meshTargets.map((q) =>
        connectPeer(options, { ...target, to: q, address: table[q - 1], purpose: "mesh" })
      ),
    ]).catch((error) => {
      throw stop.reason() ?? error;
    });
    const peers: (Link | undefined)[] = new Array(size).fill(undefined);
    peers[0] = joined;
    for (const [r, link] of accepted) if (r !== 0) peers[r] = link;
    if (to !== 0) peers[to] = next;
    meshTargets.forEach((q, i) => peers[q] = mesh[i]);
    return { links: { control: [joined], next, prev: accepted.get(rank - 1)!, peers } };
  } catch (error) {
    // Rank 0 hears why, and frees this rank's place.
    if (control) void control.abort((error as Error).message);
    closeQuietly(conn);
    throw error;
  } finally {
    stop.clear();
    closeQuietly(listener);
  }
}

/**
 * Accepts connections on `listener` until it is closed (then rejects),
 * handing each to `admit` without waiting for it — so that one connection's
 * handshake never delays another's — and at most
 * {@linkcode MAX_PENDING_HANDSHAKES} at a time (further ones are closed at
 * once). An error `admit` throws goes to `onError`.
 */
async function acceptEach(
  listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>,
  admit: (conn: Deno.TcpConn) => Promise<void>,
  onError: (error: unknown) => void,
): Promise<never> {
  let pending = 0;
  for (;;) {
    const conn = await listener.accept();
    if (pending >= MAX_PENDING_HANDSHAKES) {
      closeQuietly(conn);
      continue;
    }
    pending++;
    admit(conn).catch(onError).finally(() => pending--);
  }
}

/** A handshake's deadline: the milliseconds left of it, at least 1. */
function handshakeDeadline(options: RendezvousOptions): { left(): number } {
  const end = performance.now() + (options.handshakeTimeoutMs ?? 10_000);
  return { left: () => Math.max(1, end - performance.now()) };
}

/**
 * Rank 0's listener at the master address. A port still held by the
 * connections of a group that just failed (a restart), or a host name that
 * does not resolve yet (a Kubernetes pod's own headless-service name appears
 * once the pod runs), is tried again until the deadline; a wrong address is not.
 */
function listenWithRetry(
  options: RendezvousOptions,
  deadline: number,
): Promise<Deno.Listener<Deno.TcpConn, Deno.NetAddr>> {
  const { masterAddr: hostname, masterPort: port } = options;
  return retrying(() => Deno.listen({ hostname, port }), {
    deadline,
    signal: options.signal,
    passing: (error) =>
      error instanceof Deno.errors.AddrInUse ||
      /failed to lookup address/.test((error as Error).message),
    fail: (error) =>
      new PeerError(`rank 0 cannot listen at ${hostname}:${port}: ${(error as Error).message}`),
  });
}

/** Connects to rank 0 until it answers or the deadline passes. */
function connectWithRetry(options: RendezvousOptions, deadline: number): Promise<Deno.TcpConn> {
  const { masterAddr: hostname, masterPort: port } = options;
  return retrying(() => Deno.connect({ hostname, port }), {
    deadline,
    signal: options.signal,
    passing: (error) =>
      error instanceof Deno.errors.ConnectionRefused ||
      error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.TimedOut,
    fail: (error, late) =>
      late
        ? new PeerError(`rank 0 did not answer at ${hostname}:${port} in time`)
        : new PeerError(`cannot reach rank 0 at ${hostname}:${port}: ${(error as Error).message}`),
  });
}

/**
 * `attempt()`'s result, trying again (after 0.1, 0.2, … up to 2 s) while it
 * fails with an error `passing` accepts. Throws `fail(error, late)` for
 * another error or once the deadline would pass (`late`), and an
 * `InterruptedRendezvous` once `signal` is aborted.
 */
async function retrying<T>(
  attempt: () => T | Promise<T>,
  policy: {
    deadline: number;
    signal?: AbortSignal;
    passing: (error: unknown) => boolean;
    fail: (error: unknown, late: boolean) => Error;
  },
): Promise<T> {
  for (let delay = 100;; delay = Math.min(2000, delay * 2)) {
    if (policy.signal?.aborted) throw new InterruptedRendezvous();
    try {
      return await attempt();
    } catch (error) {
      if (!policy.passing(error)) throw policy.fail(error, false);
      if (policy.signal?.aborted) throw new InterruptedRendezvous();
      if (performance.now() + delay > policy.deadline) throw policy.fail(error, true);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

/** Connects to another rank (the ring or the mesh), authenticated, and says who this is. */
async function connectPeer(
  options: RendezvousOptions,
  target: {
    to: number;
    address: { host: string; port: number };
    purpose?: "ring" | "mesh";
    silenceMs: number;
    onFailure: (error: PeerError) => void;
  },
): Promise<Link> {
  const { host, port } = target.address;
  const peer = `rank ${target.to} (${host}:${port})`;
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname: host, port });
  } catch (error) {
    throw new PeerError(`cannot reach ${peer}: ${(error as Error).message}`);
  }
  const timeoutMs = handshakeDeadline(options).left();
  const reader = await connectAuthenticated(conn, { key: options.key, peer, timeoutMs }).catch(
    (error) => {
      conn.close();
      throw new PeerError((error as Error).message);
    },
  );
  const hello: Hello = {
    purpose: target.purpose ?? "ring",
    rank: options.rank,
    size: options.size,
    digest: options.digest ?? "",
  };
  await sendRaw(conn, { type: "hello", ...hello });
  return new Link(conn, reader, {
    peer,
    silenceMs: target.silenceMs,
    clock: options.clock,
    onFailure: target.onFailure,
  });
}

/**
 * Accepts, on `listener`, one authenticated connection from each rank in
 * `expected`, handshaking every connection at once (an idle one delays none).
 */
async function acceptPeers(
  listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>,
  accept: {
    options: RendezvousOptions;
    /** Rank → what its connection is for. */
    expected: Map<number, "ring" | "mesh">;
    silenceMs: number;
    onFailure: (error: PeerError) => void;
  },
): Promise<Map<number, Link>> {
  const { options, expected } = accept;
  const links = new Map<number, Link>();
  if (expected.size === 0) return links;
  const complete = Promise.withResolvers<Map<number, Link>>();
  const admit = async (conn: Deno.TcpConn) => {
    const address = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
    try {
      const within = handshakeDeadline(options);
      const reader = await acceptAuthenticated(conn, {
        key: options.key,
        peer: address,
        timeoutMs: within.left(),
      });
      const hello = await readHello(reader, address, within.left());
      if (
        expected.get(hello.rank) !== hello.purpose || links.has(hello.rank) ||
        hello.size !== options.size
      ) {
        throw new FrameError(`${address}: not a connection this rank expects`);
      }
      links.set(
        hello.rank,
        new Link(conn, reader, {
          peer: `rank ${hello.rank} (${address})`,
          silenceMs: accept.silenceMs,
          clock: options.clock,
          onFailure: accept.onFailure,
        }),
      );
      if (links.size === expected.size) complete.resolve(links);
    } catch (error) {
      if (!(error instanceof AuthError || error instanceof FrameError)) throw error;
      options.onNotice?.(`refused a connection from ${address}: ${error.message}`);
      void refuseAndClose(conn, { reason: error.message, retry: false });
    }
  };
  acceptEach(listener, admit, complete.reject).catch(() =>
    complete.reject(new PeerError("the rendezvous stopped"))
  );
  return await complete.promise;
}

/** Closes what blocks the rendezvous once `signal` aborts or the deadline passes. */
function stopper(signal: AbortSignal | undefined, deadline: number, close: () => void) {
  let why: PeerError | InterruptedRendezvous | undefined;
  const onAbort = () => {
    why ??= new InterruptedRendezvous();
    close();
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  const timer = setTimeout(() => {
    why ??= new PeerError("the group was not complete in time");
    close();
  }, Math.max(0, deadline - performance.now()));
  return {
    reason: () => why,
    clear: () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    },
  };
}

function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch { /* already closed */ }
}
