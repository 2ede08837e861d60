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
}

const FLUSH_MS = 1000;

export class StepProfile {
  private readonly shapes = new Map<string, StepShapeStats>();
  private first: StepShapeStats | undefined;
  private dirty = false;
  private readonly timer: NodeJS.Timeout;

  /** `rankOf`: an adapter's rank as the placement knows it (undefined when it does not). */
  constructor(
    private readonly file: string,
    private readonly executorId: string,
    private readonly rankOf: (adapterId: string) => number | undefined = () => undefined,
  ) {
    // Rewritten whole every second (not per step: a write per step would slow the steps it times).
    this.timer = setInterval(() => this.flush(), FLUSH_MS);
    this.timer.unref();
  }

  record = (step: StepTiming): void => {
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

  /** Writes the file if anything changed (to a temporary name first: a reader never sees half). */
  flush(): void {
    if (!this.dirty) return;
    this.dirty = false;
    const body: StepProfileFile = {
      executorId: this.executorId,
      steps: [...this.shapes.values()],
      ...(this.first ? { first: this.first } : {}),
    };
    const tmp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(body)}\n`);
    renameSync(tmp, this.file);
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
