/**
 * The lines of a byte stream, as they arrive.
 *
 * @module
 */

/**
 * Every line of `stream` (UTF-8), without its `\n` or `\r\n`; the last one
 * even without a newline.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lines } from "./lines.ts";
 *
 * const stream = ReadableStream.from(["a\r\nb", "c\n", "d"].map((t) => new TextEncoder().encode(t)));
 * assert.deepEqual(await Array.fromAsync(lines(stream)), ["a", "bc", "d"]);
 * ```
 */
export async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let pending = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    const parts = (pending + text).split("\n");
    pending = parts.pop()!;
    for (const line of parts) yield line.replace(/\r$/, "");
  }
  if (pending !== "") yield pending;
}
