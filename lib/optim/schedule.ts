/**
 * Learning-rate schedules: the learning rate of every step as a function of
 * the step's position in the run, so a resumed run continues the schedule
 * exactly where it stopped.
 *
 * @module
 */

/**
 * A learning-rate schedule, each with an optional linear warm-up over the
 * first `warmupEpochs` epochs (fractions allowed):
 *
 * - `constant`: the base rate throughout (d2l's choice; the default);
 * - `step`: the base rate times `gamma` after every `everyEpochs` epochs,
 *   as PyTorch's `StepLR` stepped once per epoch;
 * - `cosine`: from the base rate down to `minLr` along half a cosine over the
 *   steps after the warm-up, as `CosineAnnealingLR` stepped per step.
 */
export type LrSchedule =
  | { name: "constant"; warmupEpochs?: number }
  | { name: "step"; everyEpochs: number; gamma?: number; warmupEpochs?: number }
  | { name: "cosine"; minLr?: number; warmupEpochs?: number };

/** Names of the schedules. */
export const SCHEDULES = ["constant", "step", "cosine"] as const;

/** Where a step is in the run, for {@linkcode learningRateAt}. */
export interface SchedulePosition {
  /** The base learning rate. */
  lr: number;
  /** Steps done before this one over the whole run (0 for the first). */
  step: number;
  /** Steps in one epoch. */
  stepsPerEpoch: number;
  /** Steps in the whole run. */
  totalSteps: number;
}

/**
 * The learning rate of the step at `position` under `schedule`.
 *
 * @example Warm-up over half an epoch, then cosine to zero
 * ```ts
 * import assert from "node:assert/strict";
 * import { learningRateAt } from "./schedule.ts";
 *
 * const schedule = { name: "cosine" as const, warmupEpochs: 0.5 };
 * const at = (step: number) =>
 *   learningRateAt(schedule, { lr: 0.1, step, stepsPerEpoch: 10, totalSteps: 25 });
 * assert.equal(at(0), 0.02); // 1/5 of the warm-up
 * assert.equal(at(4), 0.1);
 * assert.equal(at(5), 0.1); // the cosine starts at the base rate
 * assert.ok(at(24) < 0.002);
 * ```
 */
export function learningRateAt(schedule: LrSchedule, position: SchedulePosition): number {
  const { lr, step, stepsPerEpoch, totalSteps } = position;
  const warmup = Math.round((schedule.warmupEpochs ?? 0) * stepsPerEpoch);
  if (step < warmup) return (lr * (step + 1)) / warmup;
  switch (schedule.name) {
    case "constant":
      return lr;
    case "step": {
      const decays = Math.floor(step / stepsPerEpoch / schedule.everyEpochs);
      return lr * (schedule.gamma ?? 0.1) ** decays;
    }
    case "cosine": {
      const minLr = schedule.minLr ?? 0;
      const span = Math.max(1, totalSteps - warmup);
      return minLr + ((lr - minLr) * (1 + Math.cos((Math.PI * (step - warmup)) / span))) / 2;
    }
  }
}

/**
 * Says what is wrong with `schedule` (a name, a field), or undefined when it
 * is a valid {@linkcode LrSchedule}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { scheduleProblem } from "./schedule.ts";
 *
 * assert.equal(scheduleProblem({ name: "step", everyEpochs: 3 }), undefined);
 * assert.match(scheduleProblem({ name: "step" })!, /everyEpochs/);
 * ```
 */
export function scheduleProblem(schedule: unknown): string | undefined {
  if (typeof schedule !== "object" || schedule === null) return "is not an object";
  const fields = schedule as Record<string, unknown>;
  if (!SCHEDULES.includes(fields.name as LrSchedule["name"])) {
    return `name must be one of ${SCHEDULES.join(", ")}`;
  }
  const allowed: Record<LrSchedule["name"], string[]> = {
    constant: ["name", "warmupEpochs"],
    step: ["name", "everyEpochs", "gamma", "warmupEpochs"],
    cosine: ["name", "minLr", "warmupEpochs"],
  };
  const name = fields.name as LrSchedule["name"];
  const unknown = Object.keys(fields).find((key) => !allowed[name].includes(key));
  if (unknown !== undefined) return `${name} has no field ${unknown}`;
  const number = (key: string, ok: (x: number) => boolean, what: string) => {
    const value = fields[key];
    if (value === undefined) return undefined;
    return typeof value === "number" && Number.isFinite(value) && ok(value)
      ? undefined
      : `${key} must be ${what}`;
  };
  if (name === "step" && fields.everyEpochs === undefined) return "step needs everyEpochs";
  return number("warmupEpochs", (x) => x >= 0, "a number ≥ 0") ??
    number("everyEpochs", (x) => Number.isInteger(x) && x >= 1, "a whole number ≥ 1") ??
    number("gamma", (x) => x > 0, "a number > 0") ??
    number("minLr", (x) => x >= 0, "a number ≥ 0");
}

/**
 * Parses the command line's `--schedule` value: a name, then optionally `:`
 * and comma-separated `key=value` pairs, e.g. `cosine:warmup=1`,
 * `step:every=3,gamma=0.5`. Throws a `SyntaxError` naming the problem.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseSchedule } from "./schedule.ts";
 *
 * assert.deepEqual(parseSchedule("step:every=3,gamma=0.5"), {
 *   name: "step",
 *   everyEpochs: 3,
 *   gamma: 0.5,
 * });
 * assert.deepEqual(parseSchedule("cosine:warmup=1"), { name: "cosine", warmupEpochs: 1 });
 * ```
 */
export function parseSchedule(text: string): LrSchedule {
  const [name, rest] = text.split(/:(.*)/s, 2);
  const keys: Record<string, string> = {
    warmup: "warmupEpochs",
    every: "everyEpochs",
    gamma: "gamma",
    min: "minLr",
  };
  const schedule: Record<string, unknown> = { name };
  for (const pair of rest ? rest.split(",") : []) {
    const [key, value] = pair.split("=", 2);
    if (!Object.hasOwn(keys, key) || value === undefined || value.trim() === "") {
      throw new SyntaxError(`"${pair}" is not one of warmup=, every=, gamma=, min=`);
    }
    schedule[keys[key]] = Number(value);
  }
  const problem = scheduleProblem(schedule);
  if (problem !== undefined) {
    // Said with the command line's keys.
    const said = Object.entries(keys).reduce(
      (text, [key, field]) => text.replaceAll(field, `${key}=`),
      problem,
    );
    throw new SyntaxError(said);
  }
  return schedule as LrSchedule;
}
