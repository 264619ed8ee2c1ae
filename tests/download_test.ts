import assert from "node:assert/strict";
import { downloadVerified } from "../lib/data/download.ts";
import { FASHION_MNIST_FILES, loadFashionMNIST } from "../lib/data/fashion_mnist.ts";
import { DataError } from "../lib/errors.ts";
import { mulberry32 } from "../lib/util/random.ts";
import { sha256Hex } from "../lib/util/sha256.ts";
import { DATA_DIR, gzip, idxImages, withEnv, withTempDir } from "./helpers.ts";
import { ignoredWithout } from "./skips.ts";

/** A local HTTP server on 127.0.0.1 serving `files` (path → bytes); anything else is 404. */
function serve(files: Record<string, Uint8Array>) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const body = files[new URL(request.url).pathname];
    return body
      ? new Response(body as Uint8Array<ArrayBuffer>)
      : new Response("not found", { status: 404 });
  });
  return { url: `http://127.0.0.1:${server.addr.port}/`, close: () => server.shutdown() };
}

/** A raw TCP server that promises `declared` bytes, sends `sent` of them and hangs up. */
function serveTruncated(declared: number, sent: Uint8Array) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    for await (const conn of listener) {
      const buffer = new Uint8Array(4096);
      await conn.read(buffer); // the request
      const head = `HTTP/1.1 200 OK\r\nContent-Length: ${declared}\r\nConnection: close\r\n\r\n`;
      await conn.write(new TextEncoder().encode(head));
      await conn.write(sent);
      conn.close();
    }
  })();
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}/`,
    close: async () => {
      listener.close();
      await done.catch(() => {});
    },
  };
}

async function assertNothingWritten(dir: string): Promise<void> {
  const left = [];
  for await (const entry of Deno.readDir(dir)) left.push(entry.name);
  assert.deepEqual(left, [], "no file and no temporary file may be left behind");
}

// Pseudo-random pixels, so the gzipped file is large enough to cut short.
const random = mulberry32(1);
const good = await gzip(idxImages(50, 28, 28, () => random() & 0xff));
const goodSha = await sha256Hex(good);

Deno.test("downloadVerified writes a file whose checksum matches", async () => {
  const server = serve({ "/good.gz": good });
  const dir = await Deno.makeTempDir();
  try {
    let progressCalls = 0;
    await downloadVerified(`${server.url}good.gz`, `${dir}/good.gz`, {
      sha256: goodSha,
      onProgress: (received, total) => {
        progressCalls++;
        assert.equal(total, good.length);
        assert.ok(received <= good.length);
      },
    });
    assert.deepEqual(await Deno.readFile(`${dir}/good.gz`), good);
    assert.ok(progressCalls > 0);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("downloadVerified leaves nothing behind on failure", async (t) => {
  const corrupt = good.slice();
  corrupt[100] ^= 0xff;
  const server = serve({ "/good.gz": good, "/corrupt.gz": corrupt });
  assert.ok(good.length > 20_000);
  const truncated = serveTruncated(good.length, good.subarray(0, 10_000));
  const dir = await Deno.makeTempDir();
  const attempt = (url: string, sha256 = goodSha) =>
    downloadVerified(url, `${dir}/file.gz`, { sha256 });
  const isDataError = (pattern: RegExp) => (e: unknown) =>
    e instanceof DataError && pattern.test(e.message);
  try {
    await t.step("corrupt body: checksum mismatch", async () => {
      await assert.rejects(
        attempt(`${server.url}corrupt.gz`),
        isDataError(
          /SHA-256 mismatch \(got [0-9a-f]{64}, expected [0-9a-f]{64}\); nothing was written/,
        ),
      );
      await assertNothingWritten(dir);
    });
    await t.step("good body, wrong expected checksum", async () => {
      await assert.rejects(
        attempt(`${server.url}good.gz`, "0".repeat(64)),
        isDataError(/SHA-256 mismatch/),
      );
      await assertNothingWritten(dir);
    });
    await t.step("connection closed before the promised length", async () => {
      await assert.rejects(attempt(`${truncated.url}x.gz`), isDataError(/cannot download .*x\.gz/));
      await assertNothingWritten(dir);
    });
    await t.step("HTTP 404", async () => {
      await assert.rejects(attempt(`${server.url}missing.gz`), isDataError(/HTTP 404/));
      await assertNothingWritten(dir);
    });
    await t.step("nobody listening", async () => {
      const closed = serve({});
      const url = closed.url;
      await closed.close();
      await assert.rejects(
        attempt(`${url}good.gz`),
        isDataError(/^cannot download http:\/\/127\.0\.0\.1/),
      );
      await assertNothingWritten(dir);
    });
  } finally {
    await server.close();
    await truncated.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadFashionMNIST with no copy and no network names where to put the files", async () => {
  const closed = serve({});
  await closed.close();
  await withTempDir(async (cacheDir) => {
    await assert.rejects(
      withEnv(
        { FASHION_MNIST_DIR: undefined },
        () => loadFashionMNIST({ cacheDir, baseUrl: closed.url, quiet: true }),
      ),
      (e: unknown) =>
        e instanceof DataError && !e.message.includes("\n") &&
        e.message.includes("put the four Fashion-MNIST files") && e.message.includes(cacheDir),
    );
    await assertNothingWritten(cacheDir);
  });
});

Deno.test({
  name: "loadFashionMNIST downloads the four official files into the cache and verifies them",
  ignore: await ignoredWithout("fashion-mnist"),
  fn: async () => {
    const files: Record<string, Uint8Array> = {};
    for (const spec of Object.values(FASHION_MNIST_FILES)) {
      files[`/mirror/${spec.name}`] = await Deno.readFile(`${DATA_DIR}/${spec.name}`);
    }
    const server = serve(files);
    const cacheDir = await Deno.makeTempDir();
    try {
      const options = { cacheDir, baseUrl: `${server.url}mirror/`, quiet: true };
      const load = (extra: { download?: boolean } = {}) =>
        withEnv({ FASHION_MNIST_DIR: undefined }, () => loadFashionMNIST({ ...options, ...extra }));
      const { train, test } = await load();
      assert.equal(train.count, 60000);
      assert.equal(test.count, 10000);
      for (const spec of Object.values(FASHION_MNIST_FILES)) {
        assert.equal(await sha256Hex(await Deno.readFile(`${cacheDir}/${spec.name}`)), spec.sha256);
      }
      // A second load uses the cache: it works with the server gone and downloading off.
      await server.close();
      const again = await load({ download: false });
      assert.deepEqual(again.test.labels, test.labels);
    } finally {
      await server.close().catch(() => {});
      await Deno.remove(cacheDir, { recursive: true });
    }
  },
});

/** A raw TCP server that runs `respond` on each connection, after reading the request. */
function serveRaw(respond: (conn: Deno.TcpConn) => Promise<void>) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connections: Deno.TcpConn[] = [];
  const done = (async () => {
    for await (const conn of listener) {
      connections.push(conn);
      await conn.read(new Uint8Array(4096)); // the request
      respond(conn).catch(() => {}); // the client may hang up
    }
  })();
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}/file.gz`,
    close: async () => {
      listener.close();
      for (const conn of connections) {
        try {
          conn.close();
        } catch {
          // already closed
        }
      }
      await done.catch(() => {});
    },
  };
}

Deno.test("every download is bounded: silent peers time out, large bodies are cut off, Ctrl-C aborts", async (t) => {
  const cases: {
    name: string;
    respond: (conn: Deno.TcpConn) => Promise<void>;
    options: {
      maxBytes?: number;
      idleTimeout?: number;
      abortAfterMs?: number;
      deadline?: number;
      minRate?: number;
      rateWindow?: number;
    };
    error: RegExp;
  }[] = [
    {
      name: "accepts the connection and never answers",
      respond: () => new Promise(() => {}),
      options: { idleTimeout: 0.3 },
      error: /^DataError: cannot download .*: no progress for 0\.3 s$/,
    },
    {
      name: "sends headers, then nothing",
      respond: async (conn) => {
        await conn.write(
          new TextEncoder().encode("HTTP/1.1 200 OK\r\nContent-Length: 9999\r\n\r\nab"),
        );
      },
      options: { idleTimeout: 0.3 },
      error: /^DataError: cannot download .*: gave up after 2 bytes: no progress for 0\.3 s$/,
    },
    {
      name: "announces more than the limit",
      respond: async (conn) => {
        await conn.write(
          new TextEncoder().encode("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"),
        );
      },
      options: { maxBytes: 4096 },
      error: /^DataError: cannot download .*: it announces 5000 bytes, over the limit of 4096$/,
    },
    {
      name: "streams without end",
      respond: async (conn) => {
        await conn.write(new TextEncoder().encode("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"));
        const block = new Uint8Array(1024);
        for (;;) await conn.write(block);
      },
      options: { maxBytes: 64 * 1024 },
      error: /^DataError: cannot download .*: more than the limit of 65536 bytes$/,
    },
    {
      // A byte every 100 ms resets any idle timeout: only a rate catches it.
      name: "trickles a byte at a time, too slowly",
      respond: async (conn) => {
        await conn.write(
          new TextEncoder().encode("HTTP/1.1 200 OK\r\nContent-Length: 9999\r\n\r\n"),
        );
        for (let i = 0; i < 200; i++) {
          await conn.write(new Uint8Array([i]));
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      },
      options: { idleTimeout: 0.3, minRate: 100, rateWindow: 1 },
      error:
        /^DataError: cannot download .*: gave up after \d+ bytes: \d+ bytes in the last 1 s, slower than the 100 bytes\/s accepted$/,
    },
    {
      name: "arrives steadily but not in time",
      respond: async (conn) => {
        await conn.write(
          new TextEncoder().encode("HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n"),
        );
        const block = new Uint8Array(1024);
        for (let i = 0; i < 2000; i++) {
          await conn.write(block);
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
      },
      options: { maxBytes: 2 ** 27, deadline: 0.5, minRate: 1 },
      error: /^DataError: cannot download .*: gave up after \d+ bytes: not done within 0\.5 s$/,
    },
    {
      name: "Ctrl-C while it hangs",
      respond: () => new Promise(() => {}),
      options: { abortAfterMs: 100 },
      error: /^Error: interrupted by the test$/,
    },
  ];
  for (const { name, respond, options, error } of cases) {
    await t.step(name, async () => {
      const server = serveRaw(respond);
      await withTempDir(async (dir) => {
        const interrupt = new AbortController();
        if (options.abortAfterMs !== undefined) {
          setTimeout(
            () => interrupt.abort(new Error("interrupted by the test")),
            options.abortAfterMs,
          );
        }
        let progress = 0;
        await assert.rejects(
          downloadVerified(server.url, `${dir}/file.gz`, {
            sha256: goodSha,
            ...options,
            signal: interrupt.signal,
            onProgress: (received) => progress = received,
          }),
          (e: unknown) => error.test(String(e)),
        );
        // Bytes held: at most the limit (plus the chunk that crossed it).
        assert.ok(progress <= (options.maxBytes ?? 64 * 2 ** 20), `${progress} bytes taken`);
        await assertNothingWritten(dir);
      });
      await server.close();
    });
  }
});
