/**
 * A real browser for tests: Debian's `chromium-headless-shell`, driven
 * through the DevTools protocol (its `--dump-dom` returns before a page's
 * async work ends).
 *
 * @module
 */

/** The headless browser's program. */
export const BROWSER = "chromium-headless-shell";

/** A page open in the browser: evaluate expressions in it. */
export interface BrowserPage {
  /** The value of `expression` in the page (awaited if a promise; JSON-serialisable). */
  evaluate<T>(expression: string): Promise<T>;
  /** Resolves with `expression`'s value once it is truthy; rejects after `timeoutMs`. */
  waitFor<T>(expression: string, timeoutMs?: number): Promise<T>;
  /** The page as a PNG. */
  screenshot(): Promise<Uint8Array>;
}

/**
 * Opens `url` in a fresh headless browser, runs `fn` with the page, then ends
 * the browser; a browser still open after `options.killAfterMs` (default
 * 2 min) is killed.
 */
export async function withBrowserPage<T>(
  url: string,
  fn: (page: BrowserPage) => Promise<T>,
  viewport: { width: number; height: number } = { width: 1000, height: 900 },
  options: { webgpu?: boolean; killAfterMs?: number } = {},
): Promise<T> {
  const profile = await Deno.makeTempDir();
  // In a session of its own (setsid), so that its GPU and renderer processes, which outlive a
  // killed browser process (seen with WebGPU on), are killed with it as one process group.
  const child = new Deno.Command("setsid", {
    args: [
      BROWSER,
      "--no-sandbox",
      // WebGPU on SwiftShader, Chromium's software adapter, when asked for.
      ...(options.webgpu ? ["--enable-unsafe-webgpu"] : ["--disable-gpu"]),
      "--remote-debugging-port=0",
      `--user-data-dir=${profile}`,
      "about:blank",
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // A browser that never answers fails the test instead of hanging it.
  const killAll = () => {
    try {
      Deno.kill(-child.pid, "SIGKILL"); // the whole process group
    } catch {
      // it has ended
    }
  };
  const guard = setTimeout(killAll, options.killAfterMs ?? 120_000);
  try {
    // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…" on stderr.
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    let endpoint: string | undefined;
    while (endpoint === undefined) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`${BROWSER} ended before it listened: ${text}`);
      text += value;
      endpoint = text.match(/DevTools listening on (ws:\/\/\S+)/)?.[1];
    }
    void (async () => {
      while (!(await reader.read()).done) { /* drain */ }
    })();
    const socket = new WebSocket(endpoint);
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = reject;
    });
    let id = 0;
    const pending = new Map<number, PromiseWithResolvers<Record<string, unknown>>>();
    socket.onmessage = (message) => {
      const reply = JSON.parse(message.data);
      const waiter = pending.get(reply.id);
      if (!waiter) return;
      pending.delete(reply.id);
      if (reply.error) waiter.reject(new Error(JSON.stringify(reply.error)));
      else waiter.resolve(reply.result);
    };
    const send = (method: string, params: Record<string, unknown> = {}, sessionId?: string) => {
      const waiter = Promise.withResolvers<Record<string, unknown>>();
      pending.set(++id, waiter);
      socket.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
      return waiter.promise;
    };
    const { targetId } = await send("Target.createTarget", { url });
    const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
    await send(
      "Emulation.setDeviceMetricsOverride",
      { ...viewport, deviceScaleFactor: 1, mobile: false },
      sessionId as string,
    );
    const page: BrowserPage & { screenshot(): Promise<Uint8Array> } = {
      screenshot: () => Promise.reject(new Error("not yet")),
      async evaluate<V>(expression: string) {
        const result = await send("Runtime.evaluate", {
          expression,
          awaitPromise: true,
          returnByValue: true,
        }, sessionId as string);
        return (result.result as { value: V }).value;
      },
      async waitFor<V>(expression: string, timeoutMs = 20_000) {
        const until = performance.now() + timeoutMs;
        for (;;) {
          // Before the page has loaded, it has no context to evaluate in: try again.
          const value = await page.evaluate<V>(expression).catch(() => undefined);
          if (value) return value;
          if (performance.now() > until) throw new Error(`timed out waiting for ${expression}`);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      },
    };
    page.screenshot = async () => {
      const { data } = await send("Page.captureScreenshot", { format: "png" }, sessionId as string);
      return Uint8Array.from(atob(data as string), (c) => c.charCodeAt(0));
    };
    try {
      return await fn(page);
    } finally {
      // The browser ends its own processes; the group kill below is for one that does not.
      await Promise.race([
        send("Browser.close").catch(() => {}),
        new Promise((resolve) => setTimeout(resolve, 5000)),
      ]);
      socket.close();
    }
  } finally {
    clearTimeout(guard);
    killAll();
    await child.status;
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
}
