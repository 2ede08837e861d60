/**
 * The real mesh's stall while its provisioner rebalances (m15t). With the rank-aware+rebalancing
 * policy the provisioner re-places adapters every `--rebalance-interval-ms` (30 s by default); in
 * the stored validation runs the hybrid case's slow requests cluster at 29–30 s into each 40-s
 * round (53 of its ~90 requests over 2.5× their round's median, 27 rounds), a few requests in a
 * row waiting 100–300 ms, and no case or probe on a policy without rebalancing shows it
 * (docs/evaluation.md §5, m15t). The simulator prices it as a pause in which no executor starts a
 * step (`ClusterSpec.pauses`): where it ends, and how long it lasts, fitted on a probe that runs
 * the rebalancing policy at another rate and seed than the case.
 */

/** One round's requests: arrival (s from the round's start) and TTFT (ms), in one order. */
export interface TimedRequests {
  arrivalsS: readonly number[];
  ttftsMs: readonly number[];
}

/** The excess is taken over the requests that arrive this long before the stall's end. */
export const STALL_WINDOW_S = 1;
/** The longest stall the fit may reach (the stored runs' stalls: 0.1–0.35 s). */
export const MAX_STALL_S = 1;

const medianOf = (values: readonly number[]): number => {
  const v = [...values].sort((a, b) => a - b);
  const mid = Math.floor(v.length / 2);
  return v.length === 0
    ? 0
    : v.length % 2 === 1
      ? (v[mid] as number)
      : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
};

/**
 * Where a round's stall ends (s): the arrival of its request arriving in [lo, hi) whose TTFT is
 * furthest above the round's median, plus that excess (a request that arrives in the stall waits
 * for its end, then takes about the median). Undefined when no request arrived in the window.
 */
export function stallEndS(round: TimedRequests, lo: number, hi: number): number | undefined {
  const mid = medianOf(round.ttftsMs);
  let best: number | undefined;
  let worst = -Infinity;
  round.arrivalsS.forEach((a, i) => {
    const t = round.ttftsMs[i] as number;
    if (a >= lo && a < hi && t - mid > worst) {
      worst = t - mid;
      best = a + (t - mid) / 1000;
    }
  });
  return best;
}

/**
 * The mean TTFT excess (ms over each round's median) of the requests arriving in the
 * `STALL_WINDOW_S` before their round's stall end, pooled over the rounds (0 without any).
 */
export function stallExcessMs(rounds: ReadonlyArray<TimedRequests & { endS: number }>): number {
  let sum = 0;
  let n = 0;
  for (const r of rounds) {
    const mid = medianOf(r.ttftsMs);
    r.arrivalsS.forEach((a, i) => {
      if (a >= r.endS - STALL_WINDOW_S && a < r.endS) {
        sum += (r.ttftsMs[i] as number) - mid;
        n++;
      }
    });
  }
  return n > 0 ? sum / n : 0;
}

/**
 * The stall length (s) whose simulated excess (`simulate(seconds)`, the probe's rounds simulated
 * with the stall ending where each measured round's did) meets the measured one: bisection on
 * [0, max], a fixed number of steps (deterministic). 0 where the model without a stall already
 * prices the excess; `max` where even that does not reach it.
 */
export function fitStallSeconds(
  measuredExcessMs: number,
  simulate: (seconds: number) => number,
  max = MAX_STALL_S,
): number {
  if (simulate(0) >= measuredExcessMs) return 0;
  if (simulate(max) < measuredExcessMs) return max;
  let lo = 0;
  let hi = max;
  for (let i = 0; i < 20; i++) {
    const mid = (lo + hi) / 2;
    if (simulate(mid) < measuredExcessMs) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/** The pauses of a run of `durationS`: one stall ending at `endS` and every `intervalS` after it. */
export function rebalancePauses(
  endS: number,
  seconds: number,
  intervalS: number,
  durationS: number,
): Array<{ at: number; seconds: number }> {
  const out: Array<{ at: number; seconds: number }> = [];
  if (!(seconds > 0) || !(intervalS > 0)) return out;
  for (let at = endS - seconds; at < durationS; at += intervalS) if (at + seconds > 0) out.push({ at, seconds });
  return out;
}
