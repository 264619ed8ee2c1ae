/**
 * Optimizers and learning-rate schedules over flat weight vectors. A new
 * optimizer is a class implementing {@linkcode Optimizer} in its own file
 * plus one line in {@linkcode OPTIMIZERS}.
 *
 * @module
 */

import { Adam } from "./adam.ts";
import type { Optimizer } from "./optimizer.ts";
import { SGD } from "./sgd.ts";

export type { Optimizer, OptimizerState } from "./optimizer.ts";
export { SGD, type SGDOptions } from "./sgd.ts";
export { Adam, type AdamOptions } from "./adam.ts";
export {
  learningRateAt,
  type LrSchedule,
  parseSchedule,
  type SchedulePosition,
  scheduleProblem,
  SCHEDULES,
} from "./schedule.ts";

/** An optimizer and its hyper-parameters (all but the learning rate, which a schedule sets). */
export interface OptimizerConfig {
  /** A key of {@linkcode OPTIMIZERS}. */
  name: OptimizerName;
  /** SGD: momentum factor (default 0). */
  momentum?: number;
  /** SGD: Nesterov momentum (default false). */
  nesterov?: boolean;
  /** L2 penalty added to the gradient (default 0). */
  weightDecay?: number;
  /** Adam: decay of the first moment (default 0.9). */
  beta1?: number;
  /** Adam: decay of the second moment (default 0.999). */
  beta2?: number;
  /** Adam: added to the root of the second moment (default 1e-8). */
  epsilon?: number;
}

/**
 * The optimizers by name, each with the hyper-parameters it accepts.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { OPTIMIZERS } from "./mod.ts";
 *
 * const adam = OPTIMIZERS.adam.create(10, { name: "adam", beta2: 0.99 });
 * assert.equal(adam.name, "adam");
 * assert.ok(OPTIMIZERS.sgd.options.includes("momentum"));
 * ```
 */
export const OPTIMIZERS = {
  sgd: {
    options: ["momentum", "nesterov", "weightDecay"],
    create: (size: number, config: OptimizerConfig, simd?: boolean): Optimizer =>
      new SGD(size, { ...config, simd }),
  },
  adam: {
    options: ["beta1", "beta2", "epsilon", "weightDecay"],
    create: (size: number, config: OptimizerConfig, simd?: boolean): Optimizer =>
      new Adam(size, { ...config, simd }),
  },
} as const satisfies Record<
  string,
  {
    options: readonly string[];
    create: (size: number, config: OptimizerConfig, simd?: boolean) => Optimizer;
  }
>;

/** Names of the optimizers. */
export type OptimizerName = "sgd" | "adam";

/** The allowed range `[low, high)` of each numeric hyper-parameter, and how to say it. */
const RANGES: Readonly<Record<string, [number, number, string]>> = {
  momentum: [0, 1, "in [0, 1)"],
  weightDecay: [0, Infinity, "≥ 0"],
  beta1: [0, 1, "in [0, 1)"],
  beta2: [0, 1, "in [0, 1)"],
  epsilon: [Number.MIN_VALUE, Infinity, "> 0"],
};

/**
 * Says what is wrong with `config`, or undefined when it is a valid
 * {@linkcode OptimizerConfig}: a known name, only the fields that optimizer
 * takes, each in its range.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { optimizerProblem } from "./mod.ts";
 *
 * assert.equal(optimizerProblem({ name: "sgd", momentum: 0.9, nesterov: true }), undefined);
 * assert.match(optimizerProblem({ name: "adam", momentum: 0.9 })!, /adam takes no momentum/);
 * ```
 */
export function optimizerProblem(config: unknown): string | undefined {
  if (typeof config !== "object" || config === null) return "is not an object";
  const fields = config as Record<string, unknown>;
  const name = fields.name;
  if (typeof name !== "string" || !Object.hasOwn(OPTIMIZERS, name)) {
    return `name must be one of ${Object.keys(OPTIMIZERS).join(", ")}`;
  }
  const accepted: readonly string[] = OPTIMIZERS[name as OptimizerName].options;
  for (const [key, value] of Object.entries(fields)) {
    if (key === "name" || value === undefined) continue;
    if (!accepted.includes(key)) return `${name} takes no ${key}`;
    if (key === "nesterov") {
      if (typeof value !== "boolean") return "nesterov must be true or false";
      continue;
    }
    const [low, high, what] = RANGES[key];
    if (typeof value !== "number" || !(value >= low && value < high)) {
      return `${key} must be a number ${what}`;
    }
  }
  if (fields.nesterov === true && !((fields.momentum as number) > 0)) {
    return "nesterov needs a momentum above 0";
  }
  return undefined;
}

/**
 * A new optimizer for `size` weights as `config` describes; `simd: false`
 * picks the scalar JavaScript loop instead of WebAssembly SIMD (the same
 * bits; default: SIMD where the runtime has it).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createOptimizer } from "./mod.ts";
 *
 * const sgd = createOptimizer({ name: "sgd", momentum: 0.9 }, { size: 3 });
 * assert.deepEqual(Object.keys(sgd.state().slots), ["momentum"]);
 * ```
 */
export function createOptimizer(
  config: OptimizerConfig,
  options: { size: number; simd?: boolean },
): Optimizer {
  return OPTIMIZERS[config.name].create(options.size, config, options.simd);
}
