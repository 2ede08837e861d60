/**
 * The validation's interference guard (issue 15, m15n): a measured round of the real mesh that ran on
 * a disturbed machine is re-measured, by signals that are independent of the simulator's prediction
 * (and of the round's own latency figures), so that the guard cannot bias the validation towards
 * the model. The machine here is a shared VM: the hypervisor takes CPU time (`steal` in /proc/stat),
 * other processes on the VM take cores, and other tenants take memory bandwidth without either
 * showing. In the coordinator's run of 18:39 one disaggregated case round stepped 3.3× slower than
 * its sibling rounds (lone decode steps 2.90 ms against 0.78–0.88) and alone put max_error_pct at
 * 35.4 (docs/evaluation.md §5, m15n).
 *
 * This module holds only the decision: the signals are read by the bench (bench/src/validate-simulator.ts).
 */

/** What the machine did over one measured round, apart from the mesh being measured. */
export interface RoundSignals {
  /** CPU time the hypervisor took (`steal` jiffies) over the round's CPU time, 0–1. */
  stealShare: number | null;
  /** `iowait` jiffies over the round's CPU time, 0–1 (reported; not a reason by itself). */
  iowaitShare: number | null;
  /**
   * Cores busy with work other than the measured mesh over the round: the machine's busy jiffies
   * (steal excluded) less the bench's own process tree's (itself and its reaped children).
   */
  foreignCores: number | null;
  /**
   * A fixed memory-streaming sentinel timed right before and right after the round, the slower of
   * the two over the run's baseline of the same sentinel (the median of all its timings so far).
   */
  sentinelRatio: number | null;
}

/** Above any of these a round is disturbed. */
export interface GuardThresholds {
  maxStealShare: number;
  maxForeignCores: number;
  maxSentinelRatio: number;
}

/**
 * Set above the undisturbed distribution of each signal, not to make a run pass (docs/evaluation.md
 * §5, m15n): steal over 26 20-s windows of an idle or lightly used half hour was 0–0.64 % (2 % is 3×
 * the largest); the sentinel's ratio to its median over 40 idle timings reached 1.45 at most (1.5);
 * the foreign cores over a --quick run's eight undisturbed rounds were 0–0.061 (0.15 is 2.5× that;
 * a one-core memory hog on the VM for 6 s of a round read 0.457, and the 18:39 round that missed
 * ran 0.28 busy cores above its sibling rounds, steal or foreign).
 */
export const GUARD_THRESHOLDS: GuardThresholds = {
  maxStealShare: 0.02,
  maxForeignCores: 0.15,
  maxSentinelRatio: 1.5,
};

/** Re-runs of one round at most, after which the last is kept and marked. */
export const MAX_RERUNS = 2;

/** The signals that put a round over its thresholds (none: an undisturbed round). */
export function disturbanceReasons(s: RoundSignals, t: GuardThresholds = GUARD_THRESHOLDS): string[] {
  const reasons: string[] = [];
  if (s.stealShare !== null && s.stealShare > t.maxStealShare) reasons.push("steal");
  if (s.foreignCores !== null && s.foreignCores > t.maxForeignCores) reasons.push("foreign-cpu");
  if (s.sentinelRatio !== null && s.sentinelRatio > t.maxSentinelRatio) reasons.push("sentinel");
  return reasons;
}

/** One measurement of a round and what the guard made of it. */
export interface GuardedAttempt<T> {
  /** 0: the round's first measurement; 1…: its re-runs. */
  attempt: number;
  result: T;
  signals: RoundSignals;
  reasons: string[];
}

/** A round after the guard: the measurement kept and every attempt, in order. */
export interface GuardedRound<T> {
  result: T;
  signals: RoundSignals;
  attempts: Array<GuardedAttempt<T>>;
  /** The kept measurement was itself disturbed (every attempt was; it is kept and marked). */
  keptDisturbed: boolean;
}

/**
 * Measures a round, and again while the guard calls it disturbed, at most `maxReruns` times more;
 * keeps the first undisturbed measurement, or the last one, marked, when none was. `onAttempt` sees
 * each attempt as it is judged (for the log).
 */
export function guardRound<T>(
  measure: () => { result: T; signals: RoundSignals },
  options: {
    thresholds?: GuardThresholds;
    maxReruns?: number;
    onAttempt?: (a: GuardedAttempt<T>) => void;
  } = {},
): GuardedRound<T> {
  const maxReruns = options.maxReruns ?? MAX_RERUNS;
  if (!(Number.isInteger(maxReruns) && maxReruns >= 0)) throw new RangeError("maxReruns: an integer ≥ 0");
  const attempts: Array<GuardedAttempt<T>> = [];
  for (let attempt = 0; ; attempt++) {
    const { result, signals } = measure();
    const a = { attempt, result, signals, reasons: disturbanceReasons(signals, options.thresholds) };
    attempts.push(a);
    options.onAttempt?.(a);
    if (a.reasons.length === 0 || attempt >= maxReruns)
      return { result, signals, attempts, keptDisturbed: a.reasons.length > 0 };
  }
}

/**
 * The report's list of disturbed measurements: one entry per disturbed attempt, with its signals,
 * whether it was re-run (`rerun`) or kept because the re-runs ran out (`kept`).
 */
export function disturbedEntries<T>(
  name: string,
  round: number,
  g: GuardedRound<T>,
): Array<
  { case: string; round: number; attempt: number; reasons: string[]; rerun: boolean; kept: boolean } & RoundSignals
> {
  return g.attempts
    .filter((a) => a.reasons.length > 0)
    .map((a) => {
      const kept = a.attempt === g.attempts.length - 1;
      return { case: name, round, attempt: a.attempt, reasons: a.reasons, ...a.signals, rerun: !kept, kept };
    });
}

/**
 * A slow sentinel timing is timed again before it counts (m15p): at most this many times more.
 * In the coordinator's run of 01:37 each sentinel flag was one slow timing next to normal ones
 * (1.52–1.70× the median, steal 0, foreign cores ≤ 0.01), and a re-run took the flagged run's
 * after-sentinel as its own before-sentinel, so one slow timing flagged two runs
 * (docs/evaluation.md §5, m15p).
 */
export const SENTINEL_RETIMES = 1;

/**
 * One side (before or after a run) of the sentinel: timed, and timed again while it reads over
 * `maxRatio` × `baseline` (at most `retimes` more); the side's timing is the lowest. A slowness that
 * lasts (another tenant streaming memory) reads slow again; one confined to the sentinel's own
 * ~0.3 s does not, and it is not the round's. `time` times the sentinel once (and records it);
 * `baseline` gives the median of the timings so far, each time it is asked.
 */
export function confirmedSentinel(
  time: () => number,
  baseline: () => number | null,
  maxRatio: number = GUARD_THRESHOLDS.maxSentinelRatio,
  retimes: number = SENTINEL_RETIMES,
): { ms: number; timingsMs: number[] } {
  if (!(Number.isInteger(retimes) && retimes >= 0)) throw new RangeError("retimes: an integer ≥ 0");
  const timingsMs = [time()];
  for (let k = 0; k < retimes; k++) {
    const b = baseline();
    const ms = Math.min(...timingsMs);
    if (b === null || ms <= maxRatio * b) break;
    timingsMs.push(time());
  }
  return { ms: Math.min(...timingsMs), timingsMs };
}

/** The median of the sentinel's timings so far: the baseline a new timing is compared to. */
export function sentinelBaseline(timingsMs: readonly number[]): number | null {
  if (timingsMs.length === 0) return null;
  const v = [...timingsMs].sort((a, b) => a - b);
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
}
