/**
 * The engine's step period as a function of the batch's shape, fitted on step periods the worker
 * measured itself (`base-worker --step-profile`) during probes of the real mesh:
 *
 *   period(mode, shape) = fixed + perSequenceUs · (sequences − 1) + perPrefillTokenUs · prefill tokens
 *                         + perFinishUs · sequences ending in it + perRankUs · Σ the rows' adapter ranks
 *
 * with every coefficient per mode. The period runs from one step's start to the next one's (forward
 * pass with its LoRA sites, sampling, streaming each token, the I/O let in between), so it is what a
 * decoding sequence waits between two tokens. Each mode's step is its own pipeline: a disaggregated
 * step waits for its LoRA-server round trips, a hybrid one hands its remote rows' sites to JS
 * callbacks, and rank is priced where the LoRA runs, so an extra sequence or an extra unit of rank
 * does not cost the same in each (slopes shared by the modes took up those differences in other
 * terms). The rank term is there because each workload seed draws its adapters' ranks, so probes
 * and cases differ in it; it is fitted first, within steps of the same other shape
 * (`withinShapeRankSlope`), then one weighted least-squares fit per mode over its probes' steps gives
 * the rest; a slope the data cannot tell from 0 (no spread, negative, or under two standard errors)
 * is dropped and the rest refitted.
 */
import type { ServingMode } from "./simulator";

/** Steps of one shape, as the worker's profile keeps them. */
export interface StepShapeSample {
  sequences: number;
  tokens: number;
  prefillTokens: number;
  /** Sequences that ended in the step (absent in older profiles: 0). */
  finished?: number;
  /** Sum of the batch sequences' adapter ranks (absent in older profiles: 0). */
  rankSum?: number;
  count: number;
  sumUs: number;
  /** Sum of the squared periods (absent in older profiles: only the shapes' means then vary). */
  sumSqUs?: number;
}

/** One mode's slopes. */
export interface StepSlopes {
  perSequenceUs: number;
  perPrefillTokenUs: number;
  /** A sequence ending in the step: its final message, result and KV release. */
  perFinishUs: number;
  /** Per unit of the batch's rank sum. */
  perRankUs: number;
}

export interface StepPeriodFit {
  fixedUs: Partial<Record<ServingMode, number>>;
  /** Per mode (older fits have none: their shared slopes below price every mode, rank at 0). */
  slopes?: Partial<Record<ServingMode, StepSlopes>>;
  perSequenceUs?: number;
  perPrefillTokenUs?: number;
  perFinishUs?: number;
  /** Steps the fit rests on, per mode. */
  steps: Partial<Record<ServingMode, number>>;
}

/** The shape a step's period depends on. */
export interface StepPeriodShape {
  sequences: number;
  prefillTokens: number;
  finished?: number;
  rankSum?: number;
}

/** A mode's slopes in the fit (an older fit's shared ones). */
export function slopesOf(fit: StepPeriodFit, mode: ServingMode): StepSlopes {
  return (
    fit.slopes?.[mode] ?? {
      perSequenceUs: fit.perSequenceUs ?? 0,
      perPrefillTokenUs: fit.perPrefillTokenUs ?? 0,
      perFinishUs: fit.perFinishUs ?? 0,
      perRankUs: 0,
    }
  );
}

/** The fitted period of a step, or undefined when the fit has no steps of this mode. */
export function stepPeriodUs(fit: StepPeriodFit, mode: ServingMode, shape: StepPeriodShape): number | undefined {
  const fixed = fit.fixedUs[mode];
  if (fixed === undefined) return undefined;
  const k = slopesOf(fit, mode);
  return (
    fixed +
    k.perSequenceUs * Math.max(0, shape.sequences - 1) +
    k.perPrefillTokenUs * shape.prefillTokens +
    k.perFinishUs * (shape.finished ?? 0) +
    k.perRankUs * (shape.rankSum ?? 0)
  );
}

/** Solves A x = b (small, dense) by Gaussian elimination with partial pivoting. */
function solve(a: number[][], b: number[]): number[] | undefined {
  const n = b.length;
  const m = a.map((row, i) => [...row, b[i] as number]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r]![c]!) > Math.abs(m[p]![c]!)) p = r;
    if (Math.abs(m[p]![c]!) < 1e-12) return undefined;
    [m[c], m[p]] = [m[p]!, m[c]!];
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = m[r]![c]! / m[c]![c]!;
      for (let k = c; k <= n; k++) m[r]![k]! -= f * m[c]![k]!;
    }
  }
  return m.map((row, i) => row[n]! / row[i]!);
}

type Column = (s: StepShapeSample) => number;

/**
 * Weighted least squares (each shape weighs its step count) over the given columns, with each
 * coefficient's standard error: the steps' residual variance (within a shape from its sum of
 * squares, plus the shape's mean off the fit) times the diagonal of (XᵀWX)⁻¹.
 */
function leastSquares(
  rows: readonly StepShapeSample[],
  columns: Column[],
): { coef: number[]; stdErr: number[] } | undefined {
  const k = columns.length;
  const ata = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  const atb = new Array<number>(k).fill(0);
  for (const s of rows) {
    const x = columns.map((col) => col(s));
    const y = s.sumUs / s.count;
    for (let i = 0; i < k; i++) {
      atb[i]! += s.count * x[i]! * y;
      for (let j = 0; j < k; j++) ata[i]![j]! += s.count * x[i]! * x[j]!;
    }
  }
  const coef = solve(ata, atb);
  if (!coef) return undefined;
  let rss = 0;
  let n = 0;
  for (const s of rows) {
    const mean = s.sumUs / s.count;
    const fitted = columns.reduce((a, col, i) => a + col(s) * coef[i]!, 0);
    const within = s.sumSqUs !== undefined ? Math.max(0, s.sumSqUs - s.count * mean * mean) : 0;
    rss += within + s.count * (mean - fitted) ** 2;
    n += s.count;
  }
  const variance = rss / Math.max(1, n - k);
  const stdErr = columns.map((_, i) => {
    const inv = solve(
      ata,
      columns.map((__, j) => (i === j ? 1 : 0)),
    );
    return Math.sqrt(variance * Math.max(0, inv?.[i] ?? Infinity));
  });
  return { coef, stdErr };
}

/** A slope under this many standard errors is not told apart from 0 by the data: it is dropped. */
const MIN_T = 2;

const SLOPES: Record<keyof StepSlopes, Column> = {
  perSequenceUs: (s) => Math.max(0, s.sequences - 1),
  perPrefillTokenUs: (s) => s.prefillTokens,
  perFinishUs: (s) => s.finished ?? 0,
  perRankUs: (s) => s.rankSum ?? 0,
};
type Slope = keyof StepSlopes;

/**
 * The rank slope from rank differences between steps of the same other shape (sequences, prompt
 * tokens, endings) only. A batch's rank sum grows with its sequences, so a slope fitted jointly
 * with the rest takes up part of the per-sequence cost and of the drift between probes (measured:
 * 9.9 µs per unit of rank while one-sequence steps showed no order by rank, and the 12 req/s case's
 * TPOT over-predicted 32 %). 0 when those differences do not tell it apart from 0.
 */
function withinShapeRankSlope(rows: readonly StepShapeSample[]): number {
  const groups = new Map<string, StepShapeSample[]>();
  for (const s of rows) {
    const key = `${s.sequences}/${s.prefillTokens}/${s.finished ?? 0}`;
    groups.set(key, [...(groups.get(key) ?? []), s]);
  }
  let sxy = 0;
  let sxx = 0;
  let within = 0;
  let n = 0;
  for (const g of groups.values()) {
    const count = g.reduce((a, s) => a + s.count, 0);
    const rankMean = g.reduce((a, s) => a + s.count * (s.rankSum ?? 0), 0) / count;
    const periodMean = g.reduce((a, s) => a + s.sumUs, 0) / count;
    for (const s of g) {
      const dx = (s.rankSum ?? 0) - rankMean;
      sxy += s.count * dx * (s.sumUs / s.count - periodMean);
      sxx += s.count * dx * dx;
      const mean = s.sumUs / s.count;
      within += s.sumSqUs !== undefined ? Math.max(0, s.sumSqUs - s.count * mean * mean) : 0;
      within += s.count * (mean - periodMean) ** 2;
    }
    n += count - 1;
  }
  if (sxx <= 0) return 0;
  const slope = sxy / sxx;
  const stdErr = Math.sqrt(within / Math.max(1, n - 1) / sxx);
  return slope > 0 && slope >= MIN_T * stdErr ? slope : 0;
}

/** The same steps with a known per-rank cost taken out of their periods. */
function withoutRank(rows: readonly StepShapeSample[], perRankUs: number): StepShapeSample[] {
  return rows.map((s) => {
    const c = perRankUs * (s.rankSum ?? 0);
    const sumSqUs = s.sumSqUs === undefined ? undefined : s.sumSqUs - 2 * c * s.sumUs + s.count * c * c;
    return { ...s, sumUs: s.sumUs - s.count * c, ...(sumSqUs === undefined ? {} : { sumSqUs }) };
  });
}

/** One mode's fixed cost and slopes from its steps. */
function fitMode(steps: readonly StepShapeSample[]): { fixedUs: number; slopes: StepSlopes } {
  const one: Column = () => 1;
  const perRankUs = withinShapeRankSlope(steps);
  const rows = withoutRank(steps, perRankUs);
  // A column that is zero on every step (no adapters, no prompt in any step) has nothing to fit;
  // rank is fitted above, within shapes.
  let active = (Object.keys(SLOPES) as Slope[]).filter(
    (k) => k !== "perRankUs" && rows.some((s) => SLOPES[k](s) !== 0),
  );
  for (;;) {
    const fit = leastSquares(rows, [one, ...active.map((k) => SLOPES[k])]);
    // A slope with no spread in the data (every step one sequence) cannot be fitted: drop the last.
    if (!fit) {
      if (active.length === 0) throw new RangeError("step profiles too degenerate to fit");
      active = active.slice(0, -1);
      continue;
    }
    const value = (i: number): number => fit.coef[1 + i] as number;
    // Negative slopes (noise: a busier machine in one probe) go at once; then the weakest slope
    // the noise could have made (under MIN_T standard errors), one at a time, refitting between.
    const negative = active.filter((_, i) => value(i) < 0);
    if (negative.length > 0) {
      active = active.filter((k) => !negative.includes(k));
      continue;
    }
    const t = active.map((_, i) => value(i) / (fit.stdErr[1 + i] as number));
    const weakest = t.reduce((w, v, i) => (v < (t[w] as number) ? i : w), 0);
    if (active.length > 0 && (t[weakest] as number) < MIN_T) {
      active = active.filter((_, i) => i !== weakest);
      continue;
    }
    const slopes: StepSlopes = { perSequenceUs: 0, perPrefillTokenUs: 0, perFinishUs: 0, perRankUs };
    active.forEach((k, i) => (slopes[k] = value(i)));
    return { fixedUs: Math.max(0, fit.coef[0] as number), slopes };
  }
}

export function fitStepPeriods(
  profiles: ReadonlyArray<{ mode: ServingMode; steps: readonly StepShapeSample[] }>,
): StepPeriodFit {
  const byMode = new Map<ServingMode, StepShapeSample[]>();
  for (const p of profiles) {
    const rows = p.steps.filter((s) => s.count > 0);
    if (rows.length > 0) byMode.set(p.mode, [...(byMode.get(p.mode) ?? []), ...rows]);
  }
  if (byMode.size === 0) throw new RangeError("no engine steps in the step profiles: nothing to fit");
  const fit: Required<Pick<StepPeriodFit, "fixedUs" | "slopes" | "steps">> = { fixedUs: {}, slopes: {}, steps: {} };
  for (const [mode, rows] of byMode) {
    const m = fitMode(rows);
    fit.fixedUs[mode] = m.fixedUs;
    fit.slopes[mode] = m.slopes;
    fit.steps[mode] = rows.reduce((a, s) => a + s.count, 0);
  }
  return fit;
}
