/**
 * A one-line progress bar on stderr. On a terminal it redraws in place; when
 * stderr is a file or pipe (logs, CI) it writes a plain line now and then
 * instead, so long runs still show progress without carriage-return noise.
 *
 * @module
 */

/** Where a progress bar draws; `Deno.stderr` by default. */
export interface ProgressSink {
  /** Writes bytes synchronously. */
  writeSync(bytes: Uint8Array): number;
  /** Whether the sink is an interactive terminal. */
  isTerminal(): boolean;
}

/** Options for {@linkcode ProgressBar}. */
export interface ProgressBarOptions {
  /** Text before the bar, e.g. `epoch 1/10`. */
  label?: string;
  /** Number of characters in the bar itself. Default 30. */
  width?: number;
  /** Where to draw. Default `Deno.stderr`. */
  sink?: ProgressSink;
  /** Minimum milliseconds between redraws on a terminal. Default 100. */
  intervalMs?: number;
  /** Milliseconds between plain progress lines when not on a terminal. Default 30,000. */
  lineIntervalMs?: number;
}

/**
 * A throttled text progress bar.
 *
 * @example
 * ```ts
 * import { ProgressBar } from "./progress.ts";
 *
 * const bar = new ProgressBar(469, { label: "epoch 1/10" });
 * for (let step = 1; step <= 469; step++) bar.update(step, "loss 0.512");
 * bar.clear();
 * ```
 */
export class ProgressBar {
  readonly #total: number;
  readonly #label: string;
  readonly #width: number;
  readonly #sink: ProgressSink;
  readonly #enabled: boolean;
  readonly #intervalMs: number;
  readonly #lineIntervalMs: number;
  readonly #createdAt = performance.now();
  #lastDraw = 0;
  #drawn = false;

  /** Creates a bar that reaches 100% at `total`. */
  constructor(total: number, options: ProgressBarOptions = {}) {
    this.#total = Math.max(1, total);
    this.#label = options.label ?? "";
    this.#width = options.width ?? 30;
    this.#sink = options.sink ?? Deno.stderr;
    this.#enabled = this.#sink.isTerminal();
    this.#intervalMs = options.intervalMs ?? 100;
    this.#lineIntervalMs = options.lineIntervalMs ?? 30_000;
  }

  /** Whether the bar redraws in place (stderr is a terminal). */
  get enabled(): boolean {
    return this.#enabled;
  }

  /**
   * Shows `done` of `total`, followed by `suffix`: redrawn at most every
   * `intervalMs` on a terminal, else as a plain line every `lineIntervalMs`.
   */
  update(done: number, suffix = ""): void {
    const now = performance.now();
    if (!this.#enabled) {
      const last = this.#lastDraw || this.#createdAt;
      if (now - last < this.#lineIntervalMs || done >= this.#total) return;
      this.#lastDraw = now;
      const percent = Math.floor((100 * done) / this.#total);
      this.#write(`${this.#label} ${percent}% ${suffix}`.trimEnd() + "\n");
      return;
    }
    if (done < this.#total && now - this.#lastDraw < this.#intervalMs) return;
    this.#lastDraw = now;
    const fraction = Math.min(1, Math.max(0, done / this.#total));
    const filled = Math.round(fraction * this.#width);
    const bar = "█".repeat(filled) + "░".repeat(this.#width - filled);
    const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
    const text = `${this.#label} ${bar} ${percent} ${suffix}`.trimEnd();
    this.#write(`\r\x1b[K${text}`);
    this.#drawn = true;
  }

  /** Erases the bar so the next line starts clean. */
  clear(): void {
    if (this.#enabled && this.#drawn) this.#write("\r\x1b[K");
    this.#drawn = false;
  }

  #write(text: string): void {
    this.#sink.writeSync(new TextEncoder().encode(text));
  }
}
