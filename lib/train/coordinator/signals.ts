/**
 * Stopping a run on Ctrl-C (SIGINT) and SIGTERM the way `deno task train`
 * does, for any caller of `train()`: the first signal stops at the next step
 * boundary, after a checkpoint; a second one ends the process at once; after
 * SIGTERM (systemd, Docker, Kubernetes, Slurm) a step boundary not reached
 * within the grace time ends it too.
 *
 * @module
 */

/** The signals a run stops on. */
export type StopSignal = "SIGINT" | "SIGTERM";

/**
 * Seconds a SIGTERM leaves for reaching a step boundary and writing the
 * checkpoint: inside Kubernetes' default grace period (30 s) and systemd's
 * (90 s). Docker's `docker stop` waits 10 s unless given `--time`.
 */
export const STOP_GRACE_S = 25;

/** Listeners for SIGINT and SIGTERM, and the signal they abort. */
export interface SignalStop {
  /** Aborted (with the signal's name as its reason) by the first SIGINT or SIGTERM. */
  readonly signal: AbortSignal;
  /** Removes the listeners (and a pending grace timer). */
  dispose(): void;
}

/**
 * Listens for SIGINT and SIGTERM until disposed. The first aborts `signal`
 * and prints one line on stderr saying what happens next (`saving` says
 * whether a checkpoint is written, and by whom); a second ends the process
 * (exit 130 or 143, as a shell reports a process stopped by the signal), as
 * does SIGTERM's grace time running out.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { listenForStop } from "./signals.ts";
 *
 * const stop = listenForStop({ saving: "none" });
 * assert.equal(stop.signal.aborted, false);
 * stop.dispose();
 * ```
 */
export function listenForStop(options: {
  saving: "here" | "rank 0" | "none";
  onSignal?: (signal: StopSignal) => void;
  exit?: (code: number) => void;
  graceSeconds?: number;
}): SignalStop {
  const controller = new AbortController();
  const exit = options.exit ?? ((code: number) => Deno.exit(code));
  const graceSeconds = options.graceSeconds ?? STOP_GRACE_S;
  let grace: ReturnType<typeof setTimeout> | undefined;
  const onSignal = (signal: StopSignal) => {
    const code = signal === "SIGTERM" ? 143 : 130;
    if (controller.signal.aborted) return exit(code);
    options.onSignal?.(signal);
    const saving = {
      here: " to write a checkpoint",
      "rank 0": " that every process agrees on (rank 0 writes the checkpoint)",
      none: "; without a checkpoint directory nothing is saved",
    }[options.saving];
    const quit = signal === "SIGINT"
      ? "Ctrl-C again to quit at once"
      : `at most ${graceSeconds} s; SIGTERM again to quit at once`;
    console.error(`${signal}: stopping at the next step boundary${saving} (${quit})`);
    controller.abort(signal);
    if (signal === "SIGTERM") {
      grace = setTimeout(() => {
        console.error(
          `no step boundary within ${graceSeconds} s of SIGTERM: quitting` +
            (options.saving === "none"
              ? ""
              : " without a new checkpoint (the last one written is intact)"),
        );
        exit(code);
      }, graceSeconds * 1000);
      Deno.unrefTimer(grace);
    }
  };
  const onSigint = () => onSignal("SIGINT");
  const onSigterm = () => onSignal("SIGTERM");
  Deno.addSignalListener("SIGINT", onSigint);
  Deno.addSignalListener("SIGTERM", onSigterm);
  return {
    signal: controller.signal,
    dispose() {
      clearTimeout(grace);
      Deno.removeSignalListener("SIGINT", onSigint);
      Deno.removeSignalListener("SIGTERM", onSigterm);
    },
  };
}
