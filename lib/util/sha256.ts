/**
 * SHA-256 digests as hex strings.
 *
 * @module
 */

/**
 * Lowercase hex SHA-256 of the bytes `data` views (a typed array's own range
 * only, not its whole buffer).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sha256Hex } from "./sha256.ts";
 *
 * assert.ok((await sha256Hex(new Uint8Array())).startsWith("e3b0c442"));
 * assert.ok((await sha256Hex(new Float32Array([1]))).length === 64);
 * ```
 */
export async function sha256Hex(data: ArrayBufferView): Promise<string> {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  // crypto.subtle cannot read shared memory: copy such views first.
  const input = bytes.buffer instanceof ArrayBuffer ? bytes : bytes.slice();
  const digest = await crypto.subtle.digest("SHA-256", input as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * SHA-256 of a flat weight vector (its float32 bytes): equal checksums mean
 * bit-identical weights. `train()` reports its result's as `checksum`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { weightsChecksum } from "../../mod.ts";
 *
 * const a = await weightsChecksum(new Float32Array([0.5, 1]));
 * const b = await weightsChecksum(new Float32Array([0.5, 1.0000001]));
 * assert.notEqual(a, b);
 * ```
 */
export function weightsChecksum(weights: Float32Array): Promise<string> {
  return sha256Hex(weights);
}
