/**
 * The machine's round-to-round variation, priced the way the measurement pools it (m15s). A case's
 * measured TTFT P95 and mean TPOT are taken over the requests of all its rounds pooled, and on this
 * VM one round can run in a slower machine state than the others (the hybrid case's pooled P95 was
 * set by one slow round in all ten stored runs of m15r). A model fitted to one machine state per
 * case cannot put such a round into the pool. Here each probe round is a machine state relative to
 * the fit (`RoundState`): its steps' measured periods over the fitted ones, and the hop scale that
 * puts that round's own simulated TTFT quantile on its measured one. A case is simulated once per
 * state its mode's probe rounds measured, and the simulated rounds' requests are pooled as the
 * measured rounds' are (P95 over all requests, mean TPOT over all). The spread comes from the
 * probes, never from the case predicted.
 */
import type { Calibration } from "./cost-model";
import { percentile } from "./sim-stats";
import type { ServingMode } from "./simulator";
import { stepPeriodUs, type StepPeriodFit, type StepShapeSample } from "./step-fit";

/** One measured round's machine state, relative to the fit (1 everywhere: the fit's own state). */
export interface RoundState {
  /** Every step's period times this: the round's measured step time over the fit's price of it. */
  stepScale: number;
  /** Every hop's log-normal draw times this. */
  hopScale: number;
  /** The hops' log-normal σ times this (a round whose slow requests are slower, not all). */
  hopTailScale: number;
}

export const FIT_STATE: RoundState = { stepScale: 1, hopScale: 1, hopTailScale: 1 };

/** The calibration in a round's machine state. */
export function withRoundState(k: Calibration, s: RoundState): Calibration {
  return { ...k, roundStepScale: s.stepScale, roundHopScale: s.hopScale, roundHopTailScale: s.hopTailScale };
}

/**
 * A round's step scale: its steps' summed measured periods over the fit's price of the same steps at
 * the round's busy fraction (1 where the fit prices none of them).
 */
export function roundStepScale(
  steps: readonly StepShapeSample[],
  fit: StepPeriodFit,
  mode: ServingMode,
  busyFraction: number | undefined,
): number {
  let measured = 0;
  let fitted = 0;
  for (const s of steps) {
    const p = stepPeriodUs(fit, mode, { ...s, ...(busyFraction !== undefined ? { busyFraction } : {}) });
    if (p === undefined) continue;
    measured += s.sumUs;
    fitted += s.count * p;
  }
  return fitted > 0 ? measured / fitted : 1;
}

/** The bounds a round's hop scale is searched in: a round 8× off the fit is not a machine state. */
export const ROUND_HOP_SCALE_BOUNDS: readonly [number, number] = [1 / 8, 8];

/**
 * The scale that puts a round's simulated TTFT at `quantile` on its measured one: `simulateAt(x)`
 * returns the round's simulated TTFTs (ms) with the scale at x, and their quantile grows with x.
 * Bisection in ln(x) within `ROUND_HOP_SCALE_BOUNDS`.
 */
export function fitRoundScale(
  measuredTtftsMs: readonly number[],
  quantile: number,
  simulateAt: (scale: number) => readonly number[],
  steps = 20,
): number {
  if (measuredTtftsMs.length === 0) return 1;
  const want = percentile(
    [...measuredTtftsMs].sort((a, b) => a - b),
    quantile,
  );
  const at = (x: number): number =>
    percentile(
      [...simulateAt(x)].sort((a, b) => a - b),
      quantile,
    );
  let lo = Math.log(ROUND_HOP_SCALE_BOUNDS[0]);
  let hi = Math.log(ROUND_HOP_SCALE_BOUNDS[1]);
  if (at(Math.exp(lo)) >= want) return Math.exp(lo);
  if (at(Math.exp(hi)) <= want) return Math.exp(hi);
  for (let i = 0; i < steps; i++) {
    const mid = (lo + hi) / 2;
    if (at(Math.exp(mid)) < want) lo = mid;
    else hi = mid;
  }
  return Math.exp((lo + hi) / 2);
}

/** One simulated round of a case, in one machine state. */
export interface StateRound {
  ttftsMs: readonly number[];
  tpotMeanMs: number;
  completed: number;
  throughputTokensPerSecond: number;
}

/**
 * A case's prediction over machine states: one simulated round per state, pooled as the measured
 * rounds are (TTFT P50 and P95 over every round's requests, mean TPOT over every request: the
 * rounds' means weighted by their requests; throughput and completed requests the rounds' median).
 */
export function pooledOverStates(
  states: readonly RoundState[],
  simulateState: (s: RoundState) => StateRound,
): {
  ttftMs: { p50: number; p95: number };
  tpotMs: { mean: number };
  throughputTokensPerSecond: number;
  completed: number;
} {
  if (states.length === 0) throw new RangeError("pooledOverStates needs at least one state");
  const each = states.map(simulateState);
  const ttft = each.flatMap((r) => r.ttftsMs).sort((a, b) => a - b);
  const n = each.reduce((a, r) => a + r.completed, 0);
  const median = (v: number[]): number => {
    const s = [...v].sort((a, b) => a - b);
    const mid = Math.floor(s.length / 2);
    return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
  };
  return {
    ttftMs: { p50: percentile(ttft, 50), p95: percentile(ttft, 95) },
    tpotMs: { mean: n > 0 ? each.reduce((a, r) => a + r.tpotMeanMs * r.completed, 0) / n : 0 },
    throughputTokensPerSecond: median(each.map((r) => r.throughputTokensPerSecond)),
    completed: median(each.map((r) => r.completed)),
  };
}
