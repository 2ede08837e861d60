/**
 * Fits the serving stack's overheads (what the kernel calibration does not see) to probes of the
 * real mesh. Every parameter is fitted once here, on the probes, and then used unchanged for every
 * configuration the simulator predicts:
 *   - per step and per sequence in a step (`stepOverheadUs`, `tokenStreamUs`): from the mean TPOT
 *     of a coupled probe at a low and at a high rate (two equations, two unknowns);
 *   - per request, log-normal (`requestOverheadUs`, `requestOverheadP95Us`): from the low coupled
 *     probe's TTFT P50 and P95;
 *   - per step with LoRA-server round trips (`remoteStepOverheadUs`) and per disaggregated request:
 *     from a disaggregated probe. This replaces the calibration's fixed transport cost, which is a
 *     gRPC echo, not the shared-memory ring the mesh uses;
 *   - per hybrid step (`hybridStepOverheadUs`: its LoRA sites go through JS callbacks): from a
 *     hybrid probe's mean TPOT.
 * Each is solved by bisection: TPOT grows with every overhead, but not linearly (queues form, and a
 * remote round trip hides behind the local step until it is the longer of the two).
 */
import type { Calibration } from "./cost-model";
import type { ServingMode } from "./simulator";

export interface ProbeSpec {
  mode: ServingMode;
  rate: number;
}

/** What a probe measured (or the simulator predicted for it). */
export interface ProbeSummary {
  ttftP50Ms: number;
  ttftP95Ms: number;
  tpotMeanMs: number;
}

export interface StackProbes {
  coupledLow: ProbeSpec & ProbeSummary;
  coupledHigh: ProbeSpec & ProbeSummary;
  disaggregated: ProbeSpec & ProbeSummary;
  hybrid: ProbeSpec & ProbeSummary;
}

export type ProbeSimulator = (probe: ProbeSpec, calibration: Calibration) => ProbeSummary;

/** The calibration with no stack overheads, and the shared-memory transport's fixed cost at 0. */
export function bareCalibration(cal: Calibration): Calibration {
  return {
    ...cal,
    stepOverheadUs: 0,
    remoteStepOverheadUs: 0,
    requestOverheadUs: 0,
    requestOverheadP95Us: 0,
    remoteRequestOverheadUs: 0,
    remoteRequestOverheadP95Us: 0,
    tokenStreamUs: 0,
    hybridStepOverheadUs: 0,
    transport: { ...cal.transport, shm: { ...cal.transport.shm, fixedUs: 0 } },
  };
}

const PROBE_STEP_US = 1000;
const excessUs = (realMs: number, simulatedMs: number): number => Math.max(0, (realMs - simulatedMs) * 1000);

/**
 * Solves f(x) = target for x ≥ 0, f non-decreasing (not linear: a remote round trip hides behind
 * the local step until it is the longer of the two), by doubling a bound and bisecting.
 */
function solveMonotone(f: (x: number) => number, target: number, steps = 16): number {
  if (f(0) >= target) return 0;
  let lo = 0;
  let hi = PROBE_STEP_US;
  while (f(hi) < target) {
    lo = hi;
    hi *= 2;
    if (hi > 1e9) return hi;
  }
  for (let i = 0; i < steps && hi - lo > 1; i++) {
    const mid = (lo + hi) / 2;
    if (f(mid) < target) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/**
 * Per-step and per-sequence overheads from the two coupled probes' mean TPOT: for a per-sequence
 * cost, the per-step one that matches the low probe; the per-sequence cost by bisection until the
 * high probe matches too (more sequences share its steps, so it alone moves with that cost).
 */
function fitStep(probes: StackProbes, bare: Calibration, sim: ProbeSimulator): { step: number; perSeq: number } {
  const tpot = (p: ProbeSpec, step: number, perSeq: number): number =>
    sim(p, { ...bare, stepOverheadUs: step, remoteStepOverheadUs: step, tokenStreamUs: perSeq }).tpotMeanMs * 1000;
  const { coupledLow: lo, coupledHigh: hi } = probes;
  const stepFor = (perSeq: number): number => solveMonotone((x) => tpot(lo, x, perSeq), lo.tpotMeanMs * 1000);
  const perSeq = solveMonotone((q) => tpot(hi, stepFor(q), q), hi.tpotMeanMs * 1000, 12);
  return { step: stepFor(perSeq), perSeq };
}

export function fitStackOverheads(probes: StackProbes, cal: Calibration, sim: ProbeSimulator): Calibration {
  const bare = bareCalibration(cal);
  const { step, perSeq } = fitStep(probes, bare, sim);
  const withStep: Calibration = { ...bare, stepOverheadUs: step, remoteStepOverheadUs: step, tokenStreamUs: perSeq };
  // At a low rate little queues: what the model leaves of TTFT is the stack's per-request
  // overhead, at its median and at its P95 (the hops' tail).
  const sc = sim(probes.coupledLow, withStep);
  const requestOverheadUs = excessUs(probes.coupledLow.ttftP50Ms, sc.ttftP50Ms);
  const requestOverheadP95Us = Math.max(requestOverheadUs, excessUs(probes.coupledLow.ttftP95Ms, sc.ttftP95Ms));
  const d = probes.disaggregated;
  const remoteExtra = solveMonotone(
    (x) => sim(d, { ...withStep, remoteStepOverheadUs: step + x }).tpotMeanMs * 1000,
    d.tpotMeanMs * 1000,
  );
  const h = probes.hybrid;
  const hybridStepOverheadUs = solveMonotone(
    (x) => sim(h, { ...withStep, hybridStepOverheadUs: x }).tpotMeanMs * 1000,
    h.tpotMeanMs * 1000,
  );
  const withRemote: Calibration = { ...withStep, remoteStepOverheadUs: step + remoteExtra, hybridStepOverheadUs };
  const sd = sim(d, withRemote);
  const remoteRequestOverheadUs = excessUs(d.ttftP50Ms, sd.ttftP50Ms);
  return {
    ...withRemote,
    requestOverheadUs,
    requestOverheadP95Us,
    remoteRequestOverheadUs,
    remoteRequestOverheadP95Us: Math.max(remoteRequestOverheadUs, excessUs(d.ttftP95Ms, sd.ttftP95Ms)),
  };
}
