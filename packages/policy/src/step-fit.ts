/**
 * The engine's step period as a function of the batch's shape, fitted on step periods the worker
 * measured itself (`base-worker --step-profile`) during probes of the real mesh:
 *
 *   period(mode, shape) = fixed + perSequenceUs · (sequences − 1) + perPrefillTokenUs · prefill tokens
 *                         + perFinishUs · sequences ending in it + perRankUs · Σ the rows' adapter ranks
 *                         + perIdleUs · (1 − the executor's busy fraction)
 *                         + Σ over the batch rows of the row adapter's cost (perRowByRankUs)
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
 *
 * The idle term is a fixed cost that depends on how busy the machine is: on a VM whose idle vCPUs
 * are slow to wake (a futex wake-up of a halted vCPU costs 40–90 µs here), a step that hands work
 * to another thread pays more when little else runs. It is fitted on run-level differences of
 * same-shape steps between probe runs of different busy fractions (`withinShapeIdleSlope`), and
 * kept only when the runs tell it apart from 0, judged on the runs, not the steps (the steps of
 * one run share its machine state, so they are not independent evidence of it).
 */
import type { ServingMode } from "./simulator";

/** The idle term's regressor other than 1 − busy fraction: ln(1 / busy) (m15r) or 1 / busy (m15u). */
export type IdleScale = "log" | "inverse";

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
  /** Times (1 − the executor's busy fraction): the cost of waking an idle machine (older fits: 0). */
  perIdleUs?: number;
  /**
   * The idle fraction the fixed cost is fitted at: the probes' steps' mean (older fits: 0, the fixed
   * cost is then a fully busy executor's). The idle term prices a step's idle fraction relative to
   * it, so the fixed cost stays a step the probes ran, not a fully busy one extrapolated below them.
   */
  idleRef?: number;
  /**
   * The idle fractions the idle slope was fitted over (absent: unbounded). A mode whose own probes
   * ran at one rate prices its idle term with the slope fitted on another mode's rates, and only
   * within their span (`fitStepPeriods`).
   */
  idleRange?: readonly [number, number];
  /**
   * The idle term's regressor: "log" is ln(1 / busy fraction) (m15r), "inverse" 1 / busy fraction
   * (m15u), so that `perIdleUs`, `idleRef` and `idleRange` are per unit of it; absent, 1 − busy
   * fraction (the model before).
   */
  idleScale?: IdleScale;
  /**
   * Per batch row, by the row adapter's rank: what a step with that adapter costs beyond one with
   * the probes' most frequent adapter (0 for that one; `adapterRowCosts`; older fits: none). Rank
   * names the adapter here: the mesh serves each drawn rank from one bundled adapter.
   */
  perRowByRankUs?: Record<string, number>;
  /**
   * The mean of the costs above over the probes' rows: the price of a row whose adapter they could
   * not price, and of each row of a measured step whose rows are not known.
   */
  perRowMeanUs?: number;
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
  /**
   * What an executor's first step costs beyond its shape's period, per mode (`firstStepCostUs`;
   * older fits: none, 0).
   */
  firstStepUs?: Partial<Record<ServingMode, number>>;
}

/** The shape a step's period depends on. */
export interface StepPeriodShape {
  sequences: number;
  prefillTokens: number;
  finished?: number;
  rankSum?: number;
  /** The executor's busy fraction around the step, 0–1 (absent: 1, no idle cost). */
  busyFraction?: number;
  /** Each row's adapter rank (absent: one row's is the rank sum, more rows cost the mean row). */
  ranks?: readonly number[];
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
  // Never below 0: the terms are linear over the probes' shapes and busy fractions, and a shape far
  // outside them (a fully busy executor, rows of fast adapters) must not come out negative.
  return Math.max(
    0,
    fixed +
      k.perSequenceUs * Math.max(0, shape.sequences - 1) +
      k.perPrefillTokenUs * shape.prefillTokens +
      k.perFinishUs * (shape.finished ?? 0) +
      k.perRankUs * (shape.rankSum ?? 0) +
      (k.perIdleUs ?? 0) * (clampIdle(k, idleOf(shape.busyFraction, k.idleScale)) - (k.idleRef ?? 0)) +
      rowCostUs(k, shape),
  );
}

/** The batch rows' adapter costs (`perRowByRankUs`; an adapter not in it costs the mean row). */
function rowCostUs(k: StepSlopes, shape: StepPeriodShape): number {
  const byRank = k.perRowByRankUs;
  if (!byRank) return 0;
  const of = (rank: number): number => byRank[String(rank)] ?? k.perRowMeanUs ?? 0;
  if (shape.ranks) return shape.ranks.reduce((a, r) => a + of(r), 0);
  return shape.sequences === 1 ? of(shape.rankSum ?? 0) : shape.sequences * (k.perRowMeanUs ?? 0);
}

/** An idle fraction within the span the mode's idle slope was fitted over. */
function clampIdle(k: StepSlopes, idle: number): number {
  return k.idleRange ? Math.min(k.idleRange[1], Math.max(k.idleRange[0], idle)) : idle;
}

/** The lowest busy fraction the log and inverse scales tell apart (below it, the regressor is held). */
const MIN_LOG_BUSY = 0.005;

/**
 * The idle term's regressor: 1 − busy fraction clamped to 0–1, or on the log scale ln(1 / busy)
 * (unknown busy fraction: 0, no idle cost, on either scale). Why a log scale (m15r): the coupled
 * lone decode step falls steeply from 2 to 4 req/s and then flattens towards 12 (0.94 ms at busy
 * 0.032, 0.71 at 0.054, 0.55 at 0.12 in the run of 08:31), about linearly in ln(busy), so a line
 * in busy through the 2 and 12 req/s probes priced the 4 req/s case's steps too slow. The inverse
 * scale (m15u) bends further: over the eleven 40-s stored runs the 4 req/s case's same-shape steps
 * sat 0.49 of the way (in log period) from the 2 to the 12 req/s probes' on average, where 1 − busy
 * puts them at 0.26, ln(1 / busy) at 0.41 and 1 / busy at 0.57 (docs/evaluation.md §5, m15u).
 */
function idleOf(busyFraction: number | undefined, scale?: IdleScale): number {
  if (busyFraction === undefined) return 0;
  if (scale === "log") return Math.log(1 / Math.min(1, Math.max(MIN_LOG_BUSY, busyFraction)));
  if (scale === "inverse") return 1 / Math.min(1, Math.max(MIN_LOG_BUSY, busyFraction));
  return Math.min(1, Math.max(0, 1 - busyFraction));
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

// The idle term is not a step-shape column: it is fitted across runs (`withinShapeIdleSlope`); nor
// are the adapters' row costs (`adapterRowCosts`).
const SLOPES: Record<
  Exclude<keyof StepSlopes, "perIdleUs" | "idleRef" | "idleRange" | "idleScale" | "perRowByRankUs" | "perRowMeanUs">,
  Column
> = {
  perSequenceUs: (s) => Math.max(0, s.sequences - 1),
  perPrefillTokenUs: (s) => s.prefillTokens,
  perFinishUs: (s) => s.finished ?? 0,
  perRankUs: (s) => s.rankSum ?? 0,
};
type Slope = keyof typeof SLOPES;

/**
 * The rank slope from rank differences between steps of the same other shape (sequences, prompt
 * tokens, endings) only. A batch's rank sum grows with its sequences, so a slope fitted jointly
 * with the rest takes up part of the per-sequence cost and of the drift between probes (measured:
 * 9.9 µs per unit of rank while one-sequence steps showed no order by rank, and the 12 req/s case's
 * TPOT over-predicted 32 %). 0 when those differences do not tell it apart from 0.
 */
function withinShapeRankSlope(runs: ReadonlyArray<readonly StepShapeSample[]>): number {
  // Within one run too: the runs' machine states differ (the same step moved 10–30 % between runs),
  // and a run whose requests drew larger ranks would lend its state to the rank.
  const perRun = runs.map((rows) => {
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
    return { sxy, sxx, within, n };
  });
  const sxx = perRun.reduce((a, r) => a + r.sxx, 0);
  if (sxx <= 0) return 0;
  const slope = perRun.reduce((a, r) => a + r.sxy, 0) / sxx;
  const told = perRun.filter((r) => r.sxx > 0);
  // From three runs on, the noise is judged on the runs' own slopes (their spread says how far a
  // slope moves with the machine's state; in the idle run of 14:00 the 10 req/s probes priced
  // rank at +19 µs while the cases' steps showed none); with fewer, on the steps.
  const stdErr =
    told.length >= 3
      ? Math.sqrt(told.reduce((a, r) => a + r.sxx * (r.sxy / r.sxx - slope) ** 2, 0) / (told.length - 1) / sxx)
      : Math.sqrt(
          perRun.reduce((a, r) => a + r.within, 0) / Math.max(1, perRun.reduce((a, r) => a + r.n, 0) - 1) / sxx,
        );
  return slope > 0 && slope >= MIN_T * stdErr ? slope : 0;
}

/** One probe run's steps and the executor's busy fraction over the run. */
export interface StepProfileRun {
  mode: ServingMode;
  /** Every step but the first when `first` is given (the worker's profile keeps it apart). */
  steps: readonly StepShapeSample[];
  /** The worker's first step of the run (absent in older profiles: then it is among `steps`). */
  first?: StepShapeSample;
  /** Σ step periods / run length (absent: the run does not enter the idle term's fit). */
  busyFraction?: number;
  /** The request rate the run offered (absent in older callers: the idle spread alone decides). */
  rate?: number;
}

/**
 * The idle fractions' spread over a mode's runs below which no idle slope is fitted. Rounds at one
 * rate differ in idle fraction by what their requests and the machine's state did (hybrid probe at
 * 2 req/s, seeds 2, 3, 4 in the run of 02:56: busy 0.109–0.116), and a slope over 0.007 of idle
 * fraction takes up whatever else moved the runs: it came out at 107 ms per unit, and at the 8 req/s
 * case's idle fraction (0.24 below the probes') priced every hybrid step at 0 (TPOT 63 % low). Rates
 * 2 and 12 req/s span 0.09–0.12 of idle fraction here; one rate, under 0.01.
 */
export const MIN_IDLE_SPREAD = 0.05;

/**
 * The idle fractions' spread a mode's runs need for an idle slope when they ran at two or more
 * rates (m15q). There the spread is the rates', by design, not what one rate's rounds drifted by
 * (under 0.01 in the stored runs): the disaggregated probes at 2 and 4 req/s span ~0.02 of idle
 * fraction, and over it the lone decode step moved 0.3 ms (1.05 → 0.73 ms in the 40-s runs of
 * 04:25–05:45), 3–4× what the coupled probes' slope gives there. The MIN_T test still applies.
 */
export const MIN_RATE_IDLE_SPREAD = 0.01;

/**
 * The idle slope from how same-shape steps moved between runs of different busy fractions. Per run:
 * R, the count-weighted mean of its shapes' periods minus each shape's mean over all runs, and X,
 * its idle fraction minus that shape's mean idle fraction likewise; then R = slope · X through the
 * origin across runs, with the standard error from the runs' residuals. 0 with under three runs,
 * when the runs' idle fractions span under MIN_IDLE_SPREAD, or when the slope is negative or under
 * MIN_T standard errors.
 */
export function withinShapeIdleSlope(
  runs: ReadonlyArray<{ steps: readonly StepShapeSample[]; idle: number; rate?: number; linearIdle?: number }>,
): number {
  if (runs.length < 3) return 0;
  // The spread tests are on 1 − busy fraction whatever the regressor's scale (`linearIdle`).
  const idles = runs.map((r) => r.linearIdle ?? r.idle);
  const rates = new Set(runs.flatMap((r) => (r.rate === undefined ? [] : [r.rate])));
  const minSpread = rates.size >= 2 ? MIN_RATE_IDLE_SPREAD : MIN_IDLE_SPREAD;
  if (Math.max(...idles) - Math.min(...idles) < minSpread) return 0;
  const key = (s: StepShapeSample): string => `${s.sequences}/${s.prefillTokens}/${s.finished ?? 0}`;
  const shapes = new Map<string, { count: number; sumUs: number; idle: number }>();
  for (const r of runs)
    for (const s of r.steps) {
      const g = shapes.get(key(s)) ?? { count: 0, sumUs: 0, idle: 0 };
      g.count += s.count;
      g.sumUs += s.sumUs;
      g.idle += s.count * r.idle;
      shapes.set(key(s), g);
    }
  const points = runs.flatMap((r) => {
    let n = 0;
    let dy = 0;
    let dx = 0;
    for (const s of r.steps) {
      const g = shapes.get(key(s)) as { count: number; sumUs: number; idle: number };
      // A shape seen in one run only says nothing about the runs' difference.
      if (g.count === s.count) continue;
      n += s.count;
      dy += s.sumUs - s.count * (g.sumUs / g.count);
      dx += s.count * (r.idle - g.idle / g.count);
    }
    return n > 0 ? [{ x: dx / n, y: dy / n }] : [];
  });
  const sxx = points.reduce((a, p) => a + p.x * p.x, 0);
  if (points.length < 3 || sxx <= 0) return 0;
  const slope = points.reduce((a, p) => a + p.x * p.y, 0) / sxx;
  const rss = points.reduce((a, p) => a + (p.y - slope * p.x) ** 2, 0);
  const stdErr = Math.sqrt(rss / (points.length - 1) / sxx);
  return slope > 0 && slope >= MIN_T * stdErr ? slope : 0;
}

/** A decode step of one sequence: its rank sum is its one adapter's rank. */
const loneDecode = (s: StepShapeSample): boolean =>
  s.sequences === 1 && s.prefillTokens === 0 && (s.finished ?? 0) === 0;

/**
 * What a batch row costs by its adapter, beyond a row of the most frequent adapter, from one-sequence
 * decode steps (the only steps whose rows' adapters the profile names): per run, each adapter's mean
 * period minus the baseline adapter's in the same run; an adapter's cost is the mean of those
 * differences over the runs, kept when at least three runs have it and it is at least MIN_T standard
 * errors (the runs' own scatter) from 0; any other adapter costs the mean of the kept costs over the
 * probes' rows (`meanUs`). Why: the adapters differ in more than rank (the bundled
 * pattern-r8, served for rank 8 as rank 24, adapts seven modules with per-module ranks; math-r4-mlp
 * three), and the probes' seed draws other adapters than the cases' (pattern-r8 in 45 % of the
 * probes' lone decode steps, 15 % of the cases'): in the idle run of 14:22 its steps took 1.26–1.43
 * ms in the coupled probes against 1.03–1.05 for math-r4-mlp, and the probes' fixed cost carried
 * that to the cases, whose steps are mostly math-r4-mlp's (the 12 req/s TPOT 28 % high).
 */
export function adapterRowCosts(runs: ReadonlyArray<readonly StepShapeSample[]>): {
  byRank: Record<string, number>;
  meanUs: number;
} {
  const MIN_STEPS = 5;
  const perRun = runs.map((rows) => {
    const byRank = new Map<number, { count: number; sumUs: number }>();
    for (const s of rows.filter(loneDecode)) {
      const g = byRank.get(s.rankSum ?? 0) ?? { count: 0, sumUs: 0 };
      g.count += s.count;
      g.sumUs += s.sumUs;
      byRank.set(s.rankSum ?? 0, g);
    }
    return byRank;
  });
  const counts = new Map<number, number>();
  for (const r of perRun) for (const [rank, g] of r) counts.set(rank, (counts.get(rank) ?? 0) + g.count);
  const base = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0]?.[0];
  const byRank: Record<string, number> = {};
  if (base === undefined) return { byRank, meanUs: 0 };
  byRank[String(base)] = 0;
  for (const rank of counts.keys()) {
    if (rank === base) continue;
    const diffs = perRun.flatMap((r) => {
      const a = r.get(rank);
      const b = r.get(base);
      return a && b && a.count >= MIN_STEPS && b.count >= MIN_STEPS ? [a.sumUs / a.count - b.sumUs / b.count] : [];
    });
    if (diffs.length < 3) continue;
    const mean = diffs.reduce((x, d) => x + d, 0) / diffs.length;
    const sd = Math.sqrt(diffs.reduce((x, d) => x + (d - mean) ** 2, 0) / (diffs.length - 1));
    if (Math.abs(mean) >= (MIN_T * sd) / Math.sqrt(diffs.length)) byRank[String(rank)] = mean;
  }
  // An adapter the runs cannot price (too few steps, or within their scatter) costs the mean row.
  let known = 0;
  let sum = 0;
  for (const [rank, c] of counts) {
    const cost = byRank[String(rank)];
    if (cost === undefined) continue;
    known += c;
    sum += c * cost;
  }
  return { byRank, meanUs: known > 0 ? sum / known : 0 };
}

/** The same steps with a known cost per step (of its shape) taken out of their periods. */
function without(rows: readonly StepShapeSample[], costUs: (s: StepShapeSample) => number): StepShapeSample[] {
  return rows.map((s) => {
    const c = costUs(s);
    const sumSqUs = s.sumSqUs === undefined ? undefined : s.sumSqUs - 2 * c * s.sumUs + s.count * c * c;
    return { ...s, sumUs: s.sumUs - s.count * c, ...(sumSqUs === undefined ? {} : { sumSqUs }) };
  });
}

/** One mode's fixed cost and slopes from its runs' steps. */
function fitMode(
  runs: readonly StepProfileRun[],
  knownRankUs?: number,
  borrowedIdle?: { perIdleUs: number; range: readonly [number, number]; linearWidth: number; shift?: boolean },
  idle: { scale?: IdleScale; medianSlope?: boolean } = {},
): { fixedUs: number; slopes: StepSlopes; idleSpan?: readonly [number, number]; linearWidth?: number } {
  const idleScale = idle.scale;
  const one: Column = () => 1;
  const perRankUs = knownRankUs ?? withinShapeRankSlope(runs.map((r) => r.steps));
  const ranked = runs.map((r) => ({ ...r, steps: without(r.steps, (x) => perRankUs * (x.rankSum ?? 0)) }));
  const rowCosts = adapterRowCosts(ranked.map((r) => r.steps));
  const known: StepSlopes = {
    perSequenceUs: 0,
    perPrefillTokenUs: 0,
    perFinishUs: 0,
    perRankUs: 0,
    perRowByRankUs: rowCosts.byRank,
    perRowMeanUs: rowCosts.meanUs,
  };
  const adapted = ranked.map((r) => ({ ...r, steps: without(r.steps, (x) => rowCostUs(known, x)) }));
  const timed = adapted
    .filter((r) => r.busyFraction !== undefined)
    .map((r) => ({
      steps: r.steps,
      idle: idleOf(r.busyFraction, idleScale),
      linearIdle: idleOf(r.busyFraction),
      ...(r.rate === undefined ? {} : { rate: r.rate }),
    }));
  // `medianSlope`: the slope alone regressed at each rate's median busy fraction (`atRateMedianBusy`);
  // the spans, the reference and the fixed cost keep each run's own.
  const regressed = idle.medianSlope
    ? atRateMedianBusy(runs.filter((r) => r.busyFraction !== undefined)).map((r, i) => ({
        ...(timed[i] as (typeof timed)[number]),
        idle: idleOf(r.busyFraction, idleScale),
      }))
    : timed;
  const own = withinShapeIdleSlope(regressed);
  const idles = timed.map((r) => r.idle);
  const idleSpan = idles.length > 0 ? ([Math.min(...idles), Math.max(...idles)] as const) : undefined;
  const linear = timed.map((r) => r.linearIdle);
  const linearWidth = linear.length > 0 ? Math.max(...linear) - Math.min(...linear) : 0;
  // Since m15l (`shift`) a mode borrows when its own runs span less idle fraction than the lender's
  // (was: under MIN_IDLE_SPREAD): the hybrid probe's rounds spread 0.07 in the run of 12:24 because
  // one of them stepped slower (a slower round is also a busier one), which fits no slope of its own.
  const lenderWidth = borrowedIdle ? borrowedIdle.range[1] - borrowedIdle.range[0] : 0;
  const borrows =
    own === 0 &&
    borrowedIdle !== undefined &&
    idleSpan !== undefined &&
    linearWidth < (borrowedIdle.shift ? Math.max(MIN_IDLE_SPREAD, borrowedIdle.linearWidth) : MIN_IDLE_SPREAD);
  const perIdleUs = borrows ? borrowedIdle.perIdleUs : own;
  // Where the borrowed slope applies. Before m15l: within the lender's idle fractions, which left
  // a mode whose probe and case both sit outside them (hybrid: probe 0.83–0.90 idle, case
  // 0.36–0.63, lender 0.87–0.97) with no idle term. Since m15l (`shift`): within the lender's
  // span's width either side of the borrower's own probes' span, so a step moves by at most what
  // the lender's steps moved across their two rates (slope × width, 0.26–0.37 ms in the stored
  // runs): the wake-up is a bounded cost, and the hybrid case's lone decode steps ran 0.32 ms
  // faster than its probe's on average over the 13 stored runs (−0.21 to +0.79).
  // On the log scale a mode's own slope applies within its own probes' span too (m15r): ln(1 / busy)
  // grows without bound as a simulated executor idles, where 1 − busy stops at 1.
  const borrowedRange: readonly [number, number] | undefined = !borrows
    ? idleScale !== undefined && own > 0 && idleSpan
      ? idleSpan
      : undefined
    : borrowedIdle.shift && idleSpan
      ? [idleSpan[0] - lenderWidth, idleSpan[1] + lenderWidth]
      : borrowedIdle.range;
  // The idle term comes out relative to the probes' mean idle fraction (by steps), so the fixed cost
  // fitted below is the period at that fraction. Taken out in full, it left the fixed cost a fully
  // busy executor's, which no probe ran at (busy fractions 0.02–0.12 at 2–12 req/s): an
  // extrapolation that came out negative and was clamped to 0, pricing every coupled step 0.08–0.16
  // ms high in the coordinator's runs of 20:47 and 21:16 (docs/evaluation.md §5, m15f).
  let idleSteps = 0;
  let idleSum = 0;
  for (const r of adapted) {
    const n = r.steps.reduce((a, s) => a + s.count, 0);
    idleSteps += n;
    idleSum += n * idleOf(r.busyFraction, idleScale);
  }
  const idleRef = perIdleUs > 0 && idleSteps > 0 ? idleSum / idleSteps : 0;
  const rows = adapted.flatMap((r) =>
    without(r.steps, () => perIdleUs * (idleOf(r.busyFraction, idleScale) - idleRef)),
  );
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
    const slopes: StepSlopes = {
      ...known,
      perRankUs,
      perIdleUs,
      ...(idleRef > 0 ? { idleRef } : {}),
      ...(borrowedRange ? { idleRange: borrowedRange } : {}),
      ...(idleScale !== undefined && perIdleUs > 0 ? { idleScale } : {}),
    };
    active.forEach((k, i) => (slopes[k] = value(i)));
    return {
      fixedUs: Math.max(0, fit.coef[0] as number),
      slopes,
      ...(own > 0 && idleSpan ? { idleSpan, linearWidth } : {}),
    };
  }
}

/**
 * `options.perRankUs`: the rank's cost per unit of a step's rank sum as measured elsewhere (the LoRA
 * kernel calibration); then it is not fitted from the step periods. The probes' steps priced it at
 * 16–19 µs per unit (a lone rank-64 decode step 2.05 ms fitted against 1.08 measured in the cases),
 * 100–200× the kernel's 0.1 µs: the probes draw few high-rank requests, and what moved their
 * steps was not the rank.
 */
export function fitStepPeriods(
  profiles: readonly StepProfileRun[],
  options: {
    perRankUs?: number;
    shareIdle?: boolean;
    shiftIdle?: boolean;
    /** The idle term's regressor (`StepSlopes.idleScale`; absent: 1 − busy fraction). */
    idleScale?: IdleScale;
    /**
     * Each run at its mode's and rate's median busy fraction (`atRateMedianBusy`): "all" in the
     * whole fit, "slope" in the idle slope's regression only.
     */
    rateMedianBusy?: "all" | "slope";
    /** The modes (or all, `true`) that borrow the lender's slope in 1 − busy fraction (m15r, m15u). */
    lendLinear?: boolean | readonly ServingMode[];
  } = {},
): StepPeriodFit {
  const byMode = new Map<ServingMode, StepProfileRun[]>();
  for (const p of options.rateMedianBusy === "all" ? atRateMedianBusy(profiles) : profiles) {
    const steps = p.steps.filter((s) => s.count > 0);
    if (steps.length > 0) byMode.set(p.mode, [...(byMode.get(p.mode) ?? []), { ...p, steps }]);
  }
  if (byMode.size === 0) throw new RangeError("no engine steps in the step profiles: nothing to fit");
  const idleOptions = {
    ...(options.idleScale ? { scale: options.idleScale } : {}),
    medianSlope: options.rateMedianBusy === "slope",
  };
  const fit: Required<Pick<StepPeriodFit, "fixedUs" | "slopes" | "steps">> = { fixedUs: {}, slopes: {}, steps: {} };
  const fitted = new Map(
    [...byMode].map(([mode, rows]) => [mode, fitMode(rows, options.perRankUs, undefined, idleOptions)]),
  );
  // The idle term is the machine's (waking halted vCPUs), but only a mode probed at two rates can
  // fit it: the coupled probes, at 2 and 12 req/s. A mode probed at one rate takes that slope, within
  // the idle fractions it was fitted over: its cases run busier than its probe as the coupled ones do
  // (disaggregated 4 req/s case 0.06–0.13 busy against 0.03–0.06 for its 2 req/s probe; its lone
  // decode steps 3–18 % faster in 8 of 9 stored runs), and left at 0 the fit carried the probe's
  // idler steps to the case (docs/evaluation.md §5, m15k).
  const lenderMode = [...fitted].find(([, m]) => m.idleSpan !== undefined && (m.slopes.perIdleUs ?? 0) > 0)?.[0];
  const scaled = lenderMode === undefined ? undefined : fitted.get(lenderMode);
  // `lendLinear`: the borrowers (all, or the modes listed) take the lender's slope in 1 − busy
  // fraction whatever the scale, and fit their own on it too.
  const linearFor = (mode: ServingMode): boolean =>
    options.lendLinear === true || (Array.isArray(options.lendLinear) && options.lendLinear.includes(mode));
  let relinear: ReturnType<typeof fitMode> | undefined;
  if (options.idleScale !== undefined && options.lendLinear && lenderMode !== undefined) {
    const r = fitMode(byMode.get(lenderMode) ?? [], options.perRankUs, undefined, { ...idleOptions, scale: undefined });
    relinear = r.idleSpan && (r.slopes.perIdleUs ?? 0) > 0 ? r : undefined;
  }
  const lenderFor = (mode: ServingMode): typeof scaled =>
    options.idleScale !== undefined && linearFor(mode) ? relinear : scaled;
  if (options.shareIdle !== false)
    for (const [mode, rows] of byMode) {
      const lender = lenderFor(mode);
      if (mode !== lenderMode && lender?.idleSpan)
        fitted.set(
          mode,
          fitMode(
            rows,
            options.perRankUs,
            {
              perIdleUs: lender.slopes.perIdleUs ?? 0,
              range: lender.idleSpan,
              linearWidth: lender.linearWidth ?? 0,
              shift: options.shiftIdle !== false,
            },
            linearFor(mode) ? { ...idleOptions, scale: undefined } : idleOptions,
          ),
        );
    }
  for (const [mode, rows] of byMode) {
    const m = fitted.get(mode) as { fixedUs: number; slopes: StepSlopes };
    fit.fixedUs[mode] = m.fixedUs;
    fit.slopes[mode] = m.slopes;
    fit.steps[mode] = rows.reduce((a, r) => a + r.steps.reduce((n, s) => n + s.count, 0), 0);
  }
  const firstStepUs: Partial<Record<ServingMode, number>> = {};
  for (const [mode, rows] of byMode) {
    const us = firstStepCostUs(fit, mode, rows);
    if (us > 0) firstStepUs[mode] = us;
  }
  return Object.keys(firstStepUs).length > 0 ? { ...fit, firstStepUs } : fit;
}

/**
 * The runs with each one's busy fraction replaced by the median over the runs of its mode at its
 * rate (runs without a rate keep theirs). A round's busy fraction is its summed step periods over
 * its length, so a round that stepped slower for any reason also reads busier, and regressed on its
 * own busy fraction it pulls the idle slope towards 0 (m15q's run of 07:52: the disaggregated 4 req/s
 * probe's slow round 2, busy 0.075 against 0.056 and 0.055, cost that mode its own slope). The rate
 * is what the design varies; the rounds' scatter about it is noise on both axes.
 */
export function atRateMedianBusy(profiles: readonly StepProfileRun[]): StepProfileRun[] {
  const groups = new Map<string, number[]>();
  const key = (p: StepProfileRun): string => `${p.mode}/${p.rate}`;
  for (const p of profiles)
    if (p.rate !== undefined && p.busyFraction !== undefined)
      groups.set(key(p), [...(groups.get(key(p)) ?? []), p.busyFraction]);
  return profiles.map((p) => {
    const b = p.rate === undefined || p.busyFraction === undefined ? undefined : groups.get(key(p));
    if (!b) return p;
    const sorted = [...b].sort((x, y) => x - y);
    const mid = sorted.length >> 1;
    const median =
      sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
    return { ...p, busyFraction: median };
  });
}

/**
 * What a run's first step costs beyond the period the fit gives its shape: the mean over the runs
 * of (first step's period − fitted period), kept when positive and, from three runs on, at least
 * MIN_T standard errors (the runs' scatter) from 0. The first step is the worker's first request's
 * prefill, and it pays what no later step does: in disaggregated mode the first round trips to the
 * LoRA server (measured 64–84 ms in every run of 17:15, against 3–6 ms for the same prefill later),
 * in coupled and hybrid mode 15–24 ms. Only that request waits for it, but with ~46 requests a run
 * it is one of the few that set a run's TTFT P95: left out, the probes' slow first requests went
 * into the fitted request hops' tail, which priced every request, and the cases' measured P95 (on
 * three rounds pooled, so three first requests among the slowest eight) was under-predicted.
 */
function firstStepCostUs(fit: StepPeriodFit, mode: ServingMode, runs: readonly StepProfileRun[]): number {
  const extra = runs.flatMap((r) => {
    if (!r.first || r.first.count === 0) return [];
    const priced = stepPeriodUs(fit, mode, { ...r.first, busyFraction: r.busyFraction });
    return priced === undefined ? [] : [r.first.sumUs / r.first.count - priced];
  });
  if (extra.length === 0) return 0;
  const mean = extra.reduce((a, d) => a + d, 0) / extra.length;
  if (mean <= 0) return 0;
  if (extra.length < 3) return mean;
  const sd = Math.sqrt(extra.reduce((a, d) => a + (d - mean) ** 2, 0) / (extra.length - 1));
  return mean >= (MIN_T * sd) / Math.sqrt(extra.length) ? mean : 0;
}

/** An executor's first step's cost beyond its shape's period (0 when the fit has none). */
export function firstStepExtraUs(fit: StepPeriodFit, mode: ServingMode): number {
  return fit.firstStepUs?.[mode] ?? 0;
}
