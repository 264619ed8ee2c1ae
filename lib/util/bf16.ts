/**
 * bfloat16: float32's sign and 8-bit exponent with a 7-bit fraction, i.e. a
 * float32 whose low 16 bits are zero. Rounding to it is round-to-nearest,
 * ties to even (infinities stay, NaN stays NaN); a float32 that is already a
 * bfloat16 travels as its high 16 bits with nothing lost.
 *
 * @module
 */

/**
 * Rounds `values[start, end)` to bfloat16 in place (each stays a float32).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { roundToBf16 } from "./bf16.ts";
 *
 * const v = new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.4e38, -0, NaN]);
 * roundToBf16(v);
 * assert.deepEqual([...v].slice(0, 4), [1, 1 + 2 ** -6, Infinity, -0]); // ties go to even
 * assert.ok(Number.isNaN(v[4]));
 * ```
 */
export function roundToBf16(values: Float32Array, start = 0, end = values.length): void {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = start; i < end; i++) bits[i] = bf16High(bits[i]) << 16;
}

/**
 * The high 16 bits of float32 bits `b` rounded to bfloat16: to nearest, ties
 * to even (the carry may reach the exponent: the largest values round to
 * infinity); a NaN stays a NaN, quiet, with its payload's high bits.
 */
function bf16High(b: number): number {
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x007fffff) !== 0) return (b >>> 16) | 0x0040;
  return (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
}

/**
 * Writes `values[start, start + into.length)` rounded to bfloat16 (as
 * {@linkcode roundToBf16} rounds) into `into` as their high 16 bits: rounding
 * and packing in one pass, `values` left as they are.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { packBf16 } from "./bf16.ts";
 *
 * const into = new Uint16Array(2);
 * packBf16(new Float32Array([1 + 2 ** -8, -2]), 0, into);
 * assert.deepEqual([...into], [0x3f80, 0xc000]);
 * ```
 */
export function packBf16(values: Float32Array, start: number, into: Uint16Array): void {
  const bits = new Uint32Array(values.buffer, values.byteOffset + 4 * start, into.length);
  for (let i = 0; i < into.length; i++) into[i] = bf16High(bits[i]);
}

/**
 * Writes the float32 values of `bits` (from {@linkcode packBf16}) into `out`
 * from `start`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fromBf16Bits, packBf16 } from "./bf16.ts";
 *
 * const v = new Float32Array([1.5, -2, 0]);
 * const bits = new Uint16Array(3);
 * packBf16(v, 0, bits);
 * const back = new Float32Array(3);
 * fromBf16Bits(bits, back, 0);
 * assert.deepEqual(back, v);
 * ```
 */
export function fromBf16Bits(bits: Uint16Array, out: Float32Array, start: number): void {
  const words = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < bits.length; i++) words[start + i] = bits[i] << 16;
}
