/**
 * A small WebAssembly assembler: enough of the binary format to write the
 * library's element-wise loops (optimizer updates, the all-reduce's sums)
 * with 128-bit SIMD, without a toolchain and without shipping opaque bytes.
 * A function body is a list of instructions written with {@linkcode op}, in
 * the order of the WebAssembly text format.
 *
 * Plain WebAssembly arithmetic is IEEE 754 with round-to-nearest-even and
 * has no implicit fused multiply-add, so a loop written with `f32x4` (or
 * `f64x2`) operations gives the bits of the same loop written in JavaScript
 * with `Math.fround` after every operation (or in float64).
 *
 * @module
 */

/** A value type: `i32`, `f32`, `f64` or `v128`. */
export type ValueType = "i32" | "f32" | "f64" | "v128";

const TYPE_CODES: Record<ValueType, number> = { i32: 0x7f, f32: 0x7d, f64: 0x7c, v128: 0x7b };

/** One function of a module. */
export interface WasmFunction {
  /** Its export name. */
  name: string;
  /** Its parameters' types; they are locals 0, 1, … */
  params: readonly ValueType[];
  /** Further locals, numbered after the parameters. */
  locals?: readonly ValueType[];
  /** Its instructions, from {@linkcode op}; the final `end` is added. */
  body: readonly (readonly number[])[];
}

/** The module's memory: imported as `env.memory` (shared or not), in 64 KiB pages. */
export interface WasmMemory {
  /** Smallest size in pages. */
  initial: number;
  /** Largest size in pages (required when shared). */
  maximum?: number;
  /** Whether the memory is a shared one (its buffer a `SharedArrayBuffer`). */
  shared?: boolean;
}

/** Unsigned LEB128. */
function u32(value: number): number[] {
  const bytes: number[] = [];
  do {
    let byte = value & 0x7f;
    value >>>= 7;
    if (value !== 0) byte |= 0x80;
    bytes.push(byte);
  } while (value !== 0);
  return bytes;
}

/** Signed LEB128 of a 32-bit integer. */
function s32(value: number): number[] {
  const bytes: number[] = [];
  value |= 0;
  while (true) {
    const byte = value & 0x7f;
    value >>= 7;
    if ((value === 0 && (byte & 0x40) === 0) || (value === -1 && (byte & 0x40) !== 0)) {
      bytes.push(byte);
      return bytes;
    }
    bytes.push(byte | 0x80);
  }
}

const simd = (code: number) => [0xfd, ...u32(code)];
/** Alignment 2⁴ bytes and no constant offset. */
const V128_MEMARG = [4, 0];

/**
 * Instructions, named after the text format (`f32x4.add` is `op.f32x4_add`).
 * Only those the library's kernels use.
 *
 * @example `(local.get 0) (local.get 1) (i32.add)`
 * ```ts
 * import assert from "node:assert/strict";
 * import { op } from "./wasm.ts";
 *
 * assert.deepEqual([op.local_get(0), op.local_get(1), op.i32_add()].flat(), [0x20, 0, 0x20, 1, 0x6a]);
 * ```
 */
export const op = {
  local_get: (index: number): number[] => [0x20, ...u32(index)],
  local_set: (index: number): number[] => [0x21, ...u32(index)],
  local_tee: (index: number): number[] => [0x22, ...u32(index)],
  i32_const: (value: number): number[] => [0x41, ...s32(value)],
  f32_const: (value: number): number[] => [
    0x43,
    ...new Uint8Array(new Float32Array([value]).buffer),
  ],
  i32_add: (): number[] => [0x6a],
  i32_sub: (): number[] => [0x6b],
  i32_mul: (): number[] => [0x6c],
  i32_lt_u: (): number[] => [0x49],
  i32_ge_u: (): number[] => [0x4f],
  i32_load: (offset = 0): number[] => [0x28, 2, ...u32(offset)],
  f64_load: (offset = 0): number[] => [0x2b, 3, ...u32(offset)],
  /** `block` with no result. */
  block: (): number[] => [0x02, 0x40],
  /** `loop` with no result. */
  loop: (): number[] => [0x03, 0x40],
  end: (): number[] => [0x0b],
  br: (depth: number): number[] => [0x0c, ...u32(depth)],
  br_if: (depth: number): number[] => [0x0d, ...u32(depth)],
  v128_load: (): number[] => [...simd(0x00), ...V128_MEMARG],
  v128_store: (): number[] => [...simd(0x0b), ...V128_MEMARG],
  /** Lanes of two vectors by byte index (0–15 the first, 16–31 the second). */
  i8x16_shuffle: (lanes: readonly number[]): number[] => [...simd(0x0d), ...lanes],
  /** Four u16 at the address, each zero-extended to 32 bits. */
  v128_load16x4_u: (): number[] => [...simd(0x04), 3, 0],
  i32x4_splat: (): number[] => simd(0x11),
  f32x4_splat: (): number[] => simd(0x13),
  i32x4_gt_u: (): number[] => simd(0x3c),
  v128_and: (): number[] => simd(0x4e),
  v128_or: (): number[] => simd(0x50),
  /** `(a & mask) | (b & ~mask)` for `a b mask` on the stack. */
  v128_bitselect: (): number[] => simd(0x52),
  /** Two i32x4 to one i16x8, each lane saturated to [0, 65535]. */
  i16x8_narrow_i32x4_u: (): number[] => simd(0x86),
  i32x4_shl: (): number[] => simd(0xab),
  i32x4_shr_u: (): number[] => simd(0xad),
  i32x4_add: (): number[] => simd(0xae),
  f64x2_splat: (): number[] => simd(0x14),
  f32x4_demote_f64x2_zero: (): number[] => simd(0x5e),
  f64x2_promote_low_f32x4: (): number[] => simd(0x5f),
  f32x4_sqrt: (): number[] => simd(0xe3),
  f32x4_add: (): number[] => simd(0xe4),
  f32x4_sub: (): number[] => simd(0xe5),
  f32x4_mul: (): number[] => simd(0xe6),
  f32x4_div: (): number[] => simd(0xe7),
  f64x2_add: (): number[] => simd(0xf0),
  f64x2_mul: (): number[] => simd(0xf2),
};

/**
 * A loop over the byte offsets `0, 16, 32, …` below local `end`, in local
 * `i`; `at(base)` pushes the address `base + i` (`base` a local).
 *
 * @example Adds 1 to `end / 4` floats at address `p`, four at a time
 * ```ts
 * import assert from "node:assert/strict";
 * import { loop16, op, wasmModule } from "./wasm.ts";
 *
 * const body = loop16({ i: 2, end: 1 }, (at) => [
 *   ...at(0), ...at(0), op.v128_load(), op.f32_const(1), op.f32x4_splat(), op.f32x4_add(),
 *   op.v128_store(),
 * ]);
 * const bytes = wasmModule({ initial: 1 }, [
 *   { name: "inc", params: ["i32", "i32"], locals: ["i32"], body },
 * ]);
 * const memory = new WebAssembly.Memory({ initial: 1 });
 * const { exports } = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } });
 * const floats = new Float32Array(memory.buffer, 0, 8).fill(2);
 * (exports.inc as (p: number, end: number) => void)(0, 32);
 * assert.deepEqual([...floats], [3, 3, 3, 3, 3, 3, 3, 3]);
 * ```
 */
export function loop16(
  locals: { i: number; end: number },
  body: (at: (base: number) => number[][]) => number[][],
): number[][] {
  const { i } = locals;
  const at = (base: number) => [op.local_get(base), op.local_get(i), op.i32_add()];
  return loopBy({ ...locals, step: 16 }, body(at));
}

/**
 * A loop over `0, step, 2·step, …` below local `end`, in local `i`; each
 * local of `alongside` starts at 0 too and advances by its own step (e.g. a
 * 16-bit output's offset beside a 32-bit input's).
 *
 * @example Widens u16 at byte `j` to u32 at byte `64 + i`, four at a time
 * ```ts
 * import assert from "node:assert/strict";
 * import { loopBy, op, wasmModule } from "./wasm.ts";
 *
 * const [END, I, J] = [0, 1, 2];
 * const body = loopBy({ i: I, end: END, step: 16, alongside: [{ local: J, step: 8 }] }, [
 *   op.local_get(I), op.i32_const(64), op.i32_add(),
 *   op.local_get(J), op.v128_load16x4_u(), op.v128_store(),
 * ]);
 * const bytes = wasmModule({ initial: 1 }, [
 *   { name: "widen", params: ["i32"], locals: ["i32", "i32"], body },
 * ]);
 * const memory = new WebAssembly.Memory({ initial: 1 });
 * const { exports } = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } });
 * new Uint16Array(memory.buffer, 0, 8).set([1, 2, 3, 4, 5, 6, 7, 8]);
 * (exports.widen as (end: number) => void)(32);
 * assert.deepEqual([...new Uint32Array(memory.buffer, 64, 8)], [1, 2, 3, 4, 5, 6, 7, 8]);
 * ```
 */
export function loopBy(
  locals: {
    i: number;
    end: number;
    step: number;
    alongside?: readonly { local: number; step: number }[];
  },
  body: number[][],
): number[][] {
  const { i, end, step, alongside = [] } = locals;
  const counters = [{ local: i, step }, ...alongside];
  return [
    ...counters.flatMap(({ local }) => [op.i32_const(0), op.local_set(local)]),
    op.block(),
    op.loop(),
    op.local_get(i),
    op.local_get(end),
    op.i32_ge_u(),
    op.br_if(1),
    ...body,
    ...counters.flatMap(({ local, step }) => [
      op.local_get(local),
      op.i32_const(step),
      op.i32_add(),
      op.local_set(local),
    ]),
    op.br(0),
    op.end(),
    op.end(),
  ];
}

/**
 * `build()`'s module, compiled on the first call and kept; null (kept too)
 * where this runtime refuses it, e.g. one without WebAssembly SIMD or shared
 * memory.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { compiledOnce } from "./wasm.ts";
 *
 * const broken = compiledOnce(() => new Uint8Array([0, 1, 2]));
 * assert.equal(broken(), null);
 * ```
 */
export function compiledOnce(
  build: () => Uint8Array<ArrayBuffer>,
): () => WebAssembly.Module | null {
  let compiled: WebAssembly.Module | null | undefined;
  return () => {
    if (compiled === undefined) {
      try {
        compiled = new WebAssembly.Module(build());
      } catch {
        compiled = null;
      }
    }
    return compiled;
  };
}

function section(id: number, content: readonly number[]): number[] {
  return [id, ...u32(content.length), ...content];
}

function vector(items: readonly (readonly number[])[]): number[] {
  return [...u32(items.length), ...items.flat()];
}

function name(text: string): number[] {
  const bytes = new TextEncoder().encode(text);
  return [...u32(bytes.length), ...bytes];
}

/**
 * The bytes of a module that imports `env.memory` and exports `functions`
 * (none returns a value).
 *
 * @example A function that stores 4 + 3 at address 0
 * ```ts
 * import assert from "node:assert/strict";
 * import { op, wasmModule } from "./wasm.ts";
 *
 * const bytes = wasmModule({ initial: 1 }, [{
 *   name: "seven",
 *   params: [],
 *   body: [op.i32_const(0), op.i32_const(4), op.i32_const(3), op.i32_add(), [0x36, 2, 0]],
 * }]);
 * const memory = new WebAssembly.Memory({ initial: 1 });
 * const { exports } = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } });
 * (exports.seven as () => void)();
 * assert.equal(new Int32Array(memory.buffer)[0], 7);
 * ```
 */
export function wasmModule(
  memory: WasmMemory,
  functions: readonly WasmFunction[],
): Uint8Array<ArrayBuffer> {
  const types = functions.map((f) => [0x60, ...vector(f.params.map((t) => [TYPE_CODES[t]])), 0]);
  const limits = memory.maximum === undefined
    ? [0x00, ...u32(memory.initial)]
    : [memory.shared ? 0x03 : 0x01, ...u32(memory.initial), ...u32(memory.maximum)];
  const imports = vector([[...name("env"), ...name("memory"), 0x02, ...limits]]);
  const exports = vector(functions.map((f, i) => [...name(f.name), 0x00, ...u32(i)]));
  const bodies = functions.map((f) => {
    const locals = vector((f.locals ?? []).map((t) => [1, TYPE_CODES[t]]));
    const code = [...locals, ...f.body.flat(), 0x0b];
    return [...u32(code.length), ...code];
  });
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, vector(types)),
    ...section(2, imports),
    ...section(3, vector(functions.map((_, i) => u32(i)))),
    ...section(7, exports),
    ...section(10, vector(bodies)),
  ]);
}
