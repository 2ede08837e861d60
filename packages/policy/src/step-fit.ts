/**
 * The engine's step period as a function of the batch's shape, fitted on step periods the worker
 * measured itself (`base-worker --step-profile`) during probes of the real mesh:
 *
 *   period(mode, shape) = fixedUs[mode] + perSequenceUs · (sequences − 1)
 *                         + perPrefillTokenUs · prefill tokens + perFinishUs · sequences ending in it
 *                         + perRankUs[mode] · Σ the batch sequences' adapter ranks
 *
 * The period runs from one step's start to the next one's (forward pass with its LoRA sites,
 * sampling, streaming each token, the I/O let in between), so it is what a decoding sequence waits
 * between two tokens. One weighted least-squares fit over every probe's steps: the slopes are
 * shared by the modes, each mode has its own fixed cost (a disaggregated step also waits for its
 * LoRA-server round trips, a hybrid one for its sites' JS callbacks). The rank term is there because
 * each workload seed draws its adapters' ranks, so probes and cases differ in it. It is per mode:
 * rank is priced where the LoRA runs (the worker's kernels, the LoRA server, or both in hybrid
 * mode), and a shared slope would take up whatever else differs between the modes' batches. When
 * the data give a slope no positive value it drops out like any other.
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
}

export interface StepPeriodFit {
  fixedUs: Partial<Record<ServingMode, number>>;
  perSequenceUs: number;
  perPrefillTokenUs: number;
  /** A sequence ending in the step: its final message, result and KV release. */
  perFinishUs: number;
  /** Per unit of the batch's rank sum, per mode (absent in older fits: 0). */
  perRankUs?: Partial<Record<ServingMode, number>>;
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

/** The fitted period of a step, or undefined when the fit has no steps of this mode. */
export function stepPeriodUs(fit: StepPeriodFit, mode: ServingMode, shape: StepPeriodShape): number | undefined {
  const fixed = fit.fixedUs[mode];
  if (fixed === undefined) return undefined;
  return (
    fixed +
    fit.perSequenceUs * Math.max(0, shape.sequences - 1) +
    fit.perPrefillTokenUs * shape.prefillTokens +
    fit.perFinishUs * (shape.finished ?? 0) +
    (fit.perRankUs?.[mode] ?? 0) * (shape.rankSum ?? 0)
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

type Column = (mode: number, s: StepShapeSample) => number;

/**
 * Weighted least squares (each shape weighs its step count) over the given columns; a slope that
 * comes out negative (noise: a busier machine in one probe) is dropped and the rest refitted.
 */
function leastSquares(rows: Array<{ mode: number; s: StepShapeSample }>, columns: Column[]): number[] | undefined {
  const k = columns.length;
  const ata = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  const atb = new Array<number>(k).fill(0);
  for (const { mode, s } of rows) {
    const x = columns.map((col) => col(mode, s));
    const y = s.sumUs / s.count;
    for (let i = 0; i < k; i++) {
      atb[i]! += s.count * x[i]! * y;
      for (let j = 0; j < k; j++) ata[i]![j]! += s.count * x[i]! * x[j]!;
    }
  }
  return solve(ata, atb);
}

const SLOPES = {
  perSequenceUs: (s: StepShapeSample) => Math.max(0, s.sequences - 1),
  perPrefillTokenUs: (s: StepShapeSample) => s.prefillTokens,
  perFinishUs: (s: StepShapeSample) => s.finished ?? 0,
} as const;
type Slope = keyof typeof SLOPES | `perRankUs.${number}`;

/** A slope's column: the shared ones, or the rank sum of one mode's steps (0 in the others). */
function slopeColumn(k: Slope): Column {
  if (k.startsWith("perRankUs.")) {
    const m = Number(k.slice("perRankUs.".length));
    return (mode, s) => (mode === m ? (s.rankSum ?? 0) : 0);
  }
  const f = SLOPES[k as keyof typeof SLOPES];
  return (_, s) => f(s);
}

export function fitStepPeriods(
  profiles: ReadonlyArray<{ mode: ServingMode; steps: readonly StepShapeSample[] }>,
): StepPeriodFit {
  const modes = [...new Set(profiles.map((p) => p.mode))];
  const rows = profiles.flatMap((p) =>
    p.steps.filter((s) => s.count > 0).map((s) => ({ mode: modes.indexOf(p.mode), s })),
  );
  if (rows.length === 0) throw new RangeError("no engine steps in the step profiles: nothing to fit");
  const intercepts: Column[] = modes.map((_, m) => (mode) => (mode === m ? 1 : 0));
  // A column that is zero on every step (no adapters in a mode, no prompt in any step) has nothing to fit.
  let active = [...(Object.keys(SLOPES) as Slope[]), ...modes.map((_, m): Slope => `perRankUs.${m}`)].filter((k) =>
    rows.some(({ mode, s }) => slopeColumn(k)(mode, s) !== 0),
  );
  for (;;) {
    const x = leastSquares(rows, [...intercepts, ...active.map(slopeColumn)]);
    // A slope with no spread in the data (every step one sequence) cannot be fitted: drop the last.
    if (!x) {
      if (active.length === 0) throw new RangeError("step profiles too degenerate to fit");
      active = active.slice(0, -1);
      continue;
    }
    const slopes: Partial<Record<Slope, number>> = Object.fromEntries(
      active.map((k, i) => [k, x[modes.length + i] as number]),
    );
    const negative = active.filter((k) => (slopes[k] as number) < 0);
    if (negative.length > 0) {
      active = active.filter((k) => !negative.includes(k));
      continue;
    }
    const steps: Partial<Record<ServingMode, number>> = {};
    for (const { mode, s } of rows) steps[modes[mode]!] = (steps[modes[mode]!] ?? 0) + s.count;
    return {
      fixedUs: Object.fromEntries(modes.map((m, i) => [m, Math.max(0, x[i] as number)])),
      perSequenceUs: slopes["perSequenceUs"] ?? 0,
      perPrefillTokenUs: slopes["perPrefillTokenUs"] ?? 0,
      perFinishUs: slopes["perFinishUs"] ?? 0,
      perRankUs: Object.fromEntries(modes.map((m, i) => [m, slopes[`perRankUs.${i}`] ?? 0])),
      steps,
    };
  }
}
