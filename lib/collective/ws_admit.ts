/**
 * A member's side of a served run's admission, over a WebSocket: the run
 * sends a random challenge, the member answers HMAC-SHA256(token,
 * "ddp-member:" + challenge) — the token itself never travels. Runs the same
 * in Deno and in a browser (WebCrypto only).
 *
 * @module
 */

/**
 * Answers the run's challenge on `socket` (not yet open) with `token`;
 * resolves with the run's first frame (which says it admitted this member),
 * or rejects with an `Error` saying why the run refused or could not be
 * reached (`address` names it).
 *
 * @example
 * ```ts ignore
 * const socket = new WebSocket("ws://127.0.0.1:8080/member");
 * socket.binaryType = "arraybuffer";
 * const first = await admitted(socket, { token: "the job's token", address: "127.0.0.1:8080" });
 * ```
 */
export async function admitted(
  socket: WebSocket,
  options: { token: string; address: string },
): Promise<ArrayBuffer> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(options.token),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const done = Promise.withResolvers<ArrayBuffer>();
  const refused = (why: string) =>
    done.reject(new Error(`the run at ${options.address} refused this member: ${why}`));
  socket.onerror = () => done.reject(new Error(`cannot reach a run at ${options.address}`));
  socket.onclose = (event) => refused(event.reason || `closed (${event.code})`);
  socket.onmessage = async (event) => {
    let challenge: unknown;
    try {
      challenge = JSON.parse(String(event.data)).challenge;
    } catch {
      return refused("it did not send a challenge");
    }
    if (typeof challenge !== "string" || !/^[0-9a-f]{64}$/.test(challenge)) {
      return refused("it did not send a challenge");
    }
    const mac = new Uint8Array(
      await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`ddp-member:${challenge}`)),
    );
    const hex = [...mac].map((b) => b.toString(16).padStart(2, "0")).join("");
    socket.onmessage = (first) => {
      socket.onmessage = socket.onclose = socket.onerror = null;
      if (first.data instanceof ArrayBuffer) done.resolve(first.data);
      else refused("it sent text where a message was expected");
    };
    socket.send(JSON.stringify({ type: "answer", mac: hex }));
  };
  return await done.promise;
}
