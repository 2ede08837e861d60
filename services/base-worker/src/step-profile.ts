/**
 * The engine's step periods by batch shape, kept in a JSON file (`--step-profile`): what the
 * simulator's validation fits its per-step cost on, from the worker's own clock rather than from a
 * client's view (which adds the streaming hops) or a kernel micro-benchmark (which misses the loop).
 */
import { renameSync, writeFileSync } from "node:fs";
import type { StepTiming } from "@loramesh/engine";

/** Steps of one shape: how many, and the sum and sum of squares of their periods (µs). */
export interface StepShapeStats {
  sequences: number;
  tokens: number;
  prefillTokens: number;
  finished: number;
  /** Sum of the batch sequences' adapter ranks (0 for a base-model sequence or an unknown rank). */
  rankSum: number;
  count: number;
  sumUs: number;
  sumSqUs: number;
}

/** The file's content. */
export interface StepProfileFile {
  executorId: string;
  /** Every step but the worker's first, by shape. */
  steps: StepShapeStats[];
  /**
   * The worker's first step, on its own (absent until it ran): its first request's prefill pays
   * one-off costs the later steps do not (in disaggregated mode the first round trips to the LoRA
   * server: 64–84 ms against 3–6 ms for the same prefill later, docs/evaluation.md §5), so it is
   * kept out of the shapes the step period is fitted on and priced as its own term.
   */
  first?: StepShapeStats;
  /**
   * With `--step-series`: each of the worker's last SERIES_MAX steps in order, written when the
   * worker stops (not on the per-second rewrite: the mesh bench reads it after its timed passes).
   */
  series?: StepSample[];
}

/** One engine step as the worker timed it (`--step-series`). */
export interface StepSample {
  /** When the step started, ms since the epoch. */
  atMs: number;
  sequences: number;
  tokens: number;
  prefillTokens: number;
  finished: number;
  /** The loop's period for the step (what a decoding sequence waits between two tokens), µs. */
  periodUs: number;
  /** The forward pass alone (the native step and its LoRA sites), µs. */
  forwardUs: number;
  /** Of it, the wait for the native step; the rest is the forward pass's JavaScript, µs. */
  nativeUs: number;
}

/** Steps kept by `--step-series` (the oldest dropped first). */
export const SERIES_MAX = 8192;

const FLUSH_MS = 1000;

export class StepProfile {
  private readonly shapes = new Map<string, StepShapeStats>();
  private first: StepShapeStats | undefined;
  private dirty = false;
  private readonly timer: NodeJS.Timeout;
  private series: StepSample[] | undefined;

  /**
   * `rankOf`: an adapter's rank as the placement knows it (undefined when it does not). `series`:
   * also keep every step (the last SERIES_MAX) for the file written at close.
   */
  constructor(
    private readonly file: string,
    private readonly executorId: string,
    private readonly rankOf: (adapterId: string) => number | undefined = () => undefined,
    series = false,
  ) {
    if (series) this.series = [];
    // Rewritten whole every second (not per step: a write per step would slow the steps it times).
    this.timer = setInterval(() => this.flush(), FLUSH_MS);
    this.timer.unref();
  }

  record = (step: StepTiming): void => {
    if (this.series) {
      if (this.series.length >= SERIES_MAX) this.series.splice(0, this.series.length - SERIES_MAX + 1);
      this.series.push({
        atMs: Math.round(step.startedAtMs * 1000) / 1000,
        sequences: step.sequences,
        tokens: step.tokens,
        prefillTokens: step.prefillTokens,
        finished: step.finished,
        periodUs: Math.round(step.periodUs),
        forwardUs: Math.round(step.forwardUs),
        nativeUs: Math.round(step.nativeUs),
      });
    }
    let rankSum = 0;
    for (const id of step.adapters) if (id !== undefined) rankSum += this.rankOf(id) ?? 0;
    const shape = {
      sequences: step.sequences,
      tokens: step.tokens,
      prefillTokens: step.prefillTokens,
      finished: step.finished,
      rankSum,
    };
    this.dirty = true;
    if (!this.first) {
      this.first = { ...shape, count: 1, sumUs: step.periodUs, sumSqUs: step.periodUs * step.periodUs };
      return;
    }
    const key = `${step.sequences}/${step.tokens}/${step.prefillTokens}/${step.finished}/${rankSum}`;
    let s = this.shapes.get(key);
    if (!s) {
      s = { ...shape, count: 0, sumUs: 0, sumSqUs: 0 };
      this.shapes.set(key, s);
    }
    s.count++;
    s.sumUs += step.periodUs;
    s.sumSqUs += step.periodUs * step.periodUs;
  };

  /**
   * Writes the file if anything changed (to a temporary name first: a reader never sees half); the
   * step series only with `withSeries` (at close).
   */
  flush(withSeries = false): void {
    if (!this.dirty && !withSeries) return;
    this.dirty = false;
    const body: StepProfileFile = {
      executorId: this.executorId,
      steps: [...this.shapes.values()],
      ...(this.first ? { first: this.first } : {}),
      ...(withSeries && this.series ? { series: this.series } : {}),
    };
    const tmp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(body)}\n`);
    renameSync(tmp, this.file);
  }

  close(): void {
    clearInterval(this.timer);
    this.flush(this.series !== undefined);
  }
}
