/**
 * Fits the serving stack's overheads (what the kernel calibration does not see) to probes of the
 * real mesh. Every parameter is fitted once here, on the probes, and then used unchanged for every
 * configuration the simulator predicts:
 *   - per step and per sequence in a step (`stepOverheadUs`, `tokenStreamUs`): from the mean TPOT
 *     of a coupled probe at a low and at a high rate (two equations, two unknowns);
 *   - per request, log-normal (`requestOverheadUs`, `requestOverheadP95Us`): the pair that puts the
 *     low coupled probe's simulated TTFT P50 and P95 on the measured ones;
 *   - per step with LoRA-server round trips (`remoteStepOverheadUs`) and per disaggregated request:
 *     from a disaggregated probe. This replaces the calibration's fixed transport cost, which is a
 *     gRPC echo, not the shared-memory ring the mesh uses;
 *   - per hybrid step (`hybridStepOverheadUs`: its LoRA sites go through JS callbacks): from a
 *     hybrid probe's mean TPOT.
 * Each is solved by bisection: TPOT grows with every overhead, but not linearly (queues form, and a
 * remote round trip hides behind the local step until it is the longer of the two).
 */
import type { Calibration } from "./cost-model";
import { percentile } from "./sim-stats";
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
  /**
   * The TTFT at the quantile the hops' tail is fitted on, where it is not the P95 (since m15m: the
   * P80 of the rounds' requests pooled). Present on a measured probe only where its simulation
   * carries it too (the same estimator on both sides); absent, the tail is fitted on the P95.
   */
  ttftTailMs?: number;
}

/** A probe as measured; `busyFraction`: its executor's busy fraction over the run (the rounds' median). */
export type MeasuredProbe = ProbeSpec & ProbeSummary & { busyFraction?: number };

export interface StackProbes {
  coupledLow: MeasuredProbe;
  coupledHigh: MeasuredProbe;
  disaggregated: MeasuredProbe;
  hybrid: MeasuredProbe;
}

export type ProbeSimulator = (probe: ProbeSpec, calibration: Calibration) => ProbeSummary;

/**
 * The prediction of a probe that ran rounds of several workload seeds: the median of each round's
 * simulation with that round's seed (each distinct seed simulated once), because the measured
 * figures are the median of the rounds. The same estimator on both sides: a probe's rounds drew
 * other requests each (seeds 2, 3, 4 since m15g), and the simulation of one seed alone would be
 * fitted to the median of three.
 */
export function medianOverRounds(seeds: readonly number[], simulateSeed: (seed: number) => ProbeSummary): ProbeSummary {
  if (seeds.length === 0) throw new RangeError("a probe without rounds has nothing to simulate");
  const bySeed = new Map<number, ProbeSummary>();
  for (const seed of seeds) if (!bySeed.has(seed)) bySeed.set(seed, simulateSeed(seed));
  const each = seeds.map((seed) => bySeed.get(seed) as ProbeSummary);
  const median = (f: (s: ProbeSummary) => number): number => {
    const v = each.map(f).sort((a, b) => a - b);
    const mid = Math.floor(v.length / 2);
    return v.length % 2 === 1 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
  };
  return {
    ttftP50Ms: median((s) => s.ttftP50Ms),
    ttftP95Ms: median((s) => s.ttftP95Ms),
    tpotMeanMs: median((s) => s.tpotMeanMs),
    ...(each.every((s) => s.ttftTailMs !== undefined) ? { ttftTailMs: median((s) => s.ttftTailMs as number) } : {}),
  };
}

/**
 * The prediction of a probe whose measured TTFT percentiles are taken over the requests of all its
 * rounds pooled (since m15l): each round's simulation with that round's seed, the requests of all
 * rounds pooled (a seed that ran in two rounds counts twice, as its requests were measured twice),
 * and the pool's P50 and P95; the mean TPOT stays the median of the rounds', as measured. A round
 * of a 2 req/s probe holds ~72 requests, so its P95 is about its 4th-slowest; the median of three
 * such figures let one slow probe round set the request hops' tail (docs/evaluation.md §5, m15l).
 * Pooled, the P95 is about the 11th-slowest of ~216.
 */
export function pooledOverRounds(
  seeds: readonly number[],
  simulateSeed: (seed: number) => ProbeSummary & { ttftsMs: readonly number[] },
  tailQuantile?: number,
): ProbeSummary {
  if (seeds.length === 0) throw new RangeError("a probe without rounds has nothing to simulate");
  const bySeed = new Map<number, ProbeSummary & { ttftsMs: readonly number[] }>();
  for (const seed of seeds) if (!bySeed.has(seed)) bySeed.set(seed, simulateSeed(seed));
  const each = seeds.map((seed) => bySeed.get(seed) as ProbeSummary & { ttftsMs: readonly number[] });
  const pooled = each.flatMap((s) => s.ttftsMs).sort((a, b) => a - b);
  const tpot = each.map((s) => s.tpotMeanMs).sort((a, b) => a - b);
  const mid = Math.floor(tpot.length / 2);
  return {
    ttftP50Ms: percentile(pooled, 50),
    ttftP95Ms: percentile(pooled, 95),
    tpotMeanMs: tpot.length % 2 === 1 ? (tpot[mid] as number) : ((tpot[mid - 1] as number) + (tpot[mid] as number)) / 2,
    // The pool's TTFT at the tail's quantile (m15m: `tailQuantileOf`), where the hops' tail is fitted on it.
    ...(tailQuantile !== undefined ? { ttftTailMs: percentile(pooled, tailQuantile) } : {}),
  };
}

/**
 * The TTFT quantile the hops' tail is fitted on since m15m: the P80 of the hop probes' rounds'
 * requests pooled, not the median of the rounds' P95s. The hop is log-normal, so its median and one
 * upper quantile fix it, and the model's own distribution gives the P95. Of ~216 pooled requests of
 * a 2 req/s probe the P80 rests on the ~43rd-slowest (the pooled P95 on the ~11th; main's median of
 * three rounds' P95s on about the 4th-slowest of ~72), so the few stalled requests a probe's tail
 * holds above its P90 (in m15l's and main's runs the probes' pooled P95 sat 4–10 ms above their P90,
 * a tail far heavier than the log-normal through their P50 and P80, while the cases' P95s lay near
 * the probes' P90s) no longer set every mode's tail. This is robustness, not precision: for a sample
 * that is truly log-normal a quantile's standard error is √(p(1 − p)/n) / f(x_p), and extrapolating
 * from the P80 scales the log error by z95/z80 = 1.95, which leaves its P95 noisier than the pool's
 * own (σ·2.79/√n against σ·2.11/√n in log terms; from the P90, σ·2.19/√n). Chosen over the P90 and
 * P85 on the replays of the four runs that kept their probes' requests (docs/evaluation.md §5, m15m).
 */
export const TAIL_QUANTILE = 80;

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
    requestOverheadPerIdleUs: 0,
    hybridBusyHopSteps: 0,
    transport: { ...cal.transport, shm: { ...cal.transport.shm, fixedUs: 0 } },
  };
}

const PROBE_STEP_US = 1000;

/**
 * Solves f(x) = target for x ≥ 0, f non-decreasing (not linear: a remote round trip hides behind
 * the local step until it is the longer of the two), by doubling a bound and bisecting; returns the
 * final bracket's bound whose value is nearer the target.
 */
function solveMonotone(f: (x: number) => number, target: number, steps = 16): number {
  let fLo = f(0);
  if (fLo >= target) return 0;
  let lo = 0;
  let hi = PROBE_STEP_US;
  let fHi = f(hi);
  while (fHi < target) {
    lo = hi;
    fLo = fHi;
    hi *= 2;
    if (hi > 1e9) return hi;
    fHi = f(hi);
  }
  for (let i = 0; i < steps && hi - lo > 1; i++) {
    const mid = (lo + hi) / 2;
    const fMid = f(mid);
    if (fMid < target) [lo, fLo] = [mid, fMid];
    else [hi, fHi] = [mid, fMid];
  }
  // The bound whose value is nearer the target: a simulated P95 of a few dozen requests can jump
  // where the order of two requests changes (with stratified hops, by 5 ms within 0.2 ms of tail in
  // this package's tests), and the midpoint of a bracket around the jump may sit on its far side.
  return Math.abs(fHi - target) <= Math.abs(target - fLo) ? hi : lo;
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

/**
 * A log-normal per-request overhead (median, P95) that puts the probe's simulated TTFT P50 and P95
 * on the measured ones: the median first (no tail), then the tail above it, twice. Given several
 * probes (`remote` "both": one distribution for every mode), their sums.
 */
function fitRequest(
  probe: (ProbeSpec & ProbeSummary) | ReadonlyArray<ProbeSpec & ProbeSummary>,
  k: Calibration,
  sim: ProbeSimulator,
  remote: boolean | "both",
): { median: number; p95: number } {
  const set = (median: number, p95: number): Calibration =>
    remote === "both"
      ? {
          ...k,
          requestOverheadUs: median,
          requestOverheadP95Us: p95,
          remoteRequestOverheadUs: median,
          remoteRequestOverheadP95Us: p95,
        }
      : remote
        ? { ...k, remoteRequestOverheadUs: median, remoteRequestOverheadP95Us: p95 }
        : { ...k, requestOverheadUs: median, requestOverheadP95Us: p95 };
  // Several probes: their simulated figures summed onto their measured sum.
  const probes: ReadonlyArray<ProbeSpec & ProbeSummary> = "mode" in probe ? [probe] : probe;
  const at = (c: Calibration, f: (s: ProbeSummary) => number): number =>
    probes.reduce((a, p) => a + f(sim(p, c)), 0) * 1000;
  const want = (f: (s: ProbeSummary) => number): number => probes.reduce((a, p) => a + f(p), 0) * 1000;
  const p50 = (s: ProbeSummary): number => s.ttftP50Ms;
  // The tail on each probe's `ttftTailMs` where the measured probe carries it (m15m), else its P95.
  const tailOf = (p: ProbeSummary, s: ProbeSummary): number =>
    p.ttftTailMs !== undefined ? (s.ttftTailMs ?? s.ttftP95Ms) : s.ttftP95Ms;
  const atTail = (c: Calibration): number => probes.reduce((a, p) => a + tailOf(p, sim(p, c)), 0) * 1000;
  const wantTail = probes.reduce((a, p) => a + tailOf(p, p), 0) * 1000;
  // The tail moves the simulated median a little too: solve the median again with the tail's
  // ratio kept, then the tail again.
  let ratio = 1;
  let median = 0;
  let p95 = 0;
  for (let round = 0; round < 2; round++) {
    const m = solveMonotone((x) => at(set(x, x * ratio), p50), want(p50));
    const tail = solveMonotone((y) => atTail(set(m, m + y)), wantTail);
    median = m;
    p95 = m + tail;
    if (m <= 0) break;
    ratio = p95 / m;
  }
  return { median, p95 };
}

export function fitStackOverheads(probes: StackProbes, cal: Calibration, sim: ProbeSimulator): Calibration {
  const bare = bareCalibration(cal);
  const { step, perSeq } = fitStep(probes, bare, sim);
  const withStep: Calibration = { ...bare, stepOverheadUs: step, remoteStepOverheadUs: step, tokenStreamUs: perSeq };
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
  // At a low rate little queues: what the model leaves of TTFT is the stack's per-request
  // overhead, at its median and at its P95 (the hops' tail).
  const local = fitRequest(probes.coupledLow, withRemote, sim, false);
  const remote = fitRequest(d, withRemote, sim, true);
  return {
    ...withRemote,
    requestOverheadUs: local.median,
    requestOverheadP95Us: local.p95,
    remoteRequestOverheadUs: remote.median,
    remoteRequestOverheadP95Us: remote.p95,
  };
}

/**
 * With the step priced by the worker's measured periods (`calibration.stepPeriods`, fitted by
 * `fitStepPeriods`), what is left to fit is per request: the stream's end after the last token
 * (what the client's TPOT holds beyond the worker's steps, from both coupled probes' mean TPOT),
 * then the hops before the first token (the coupled low-rate probe's and the
 * disaggregated probe's TTFT P50 and P95, as `fitStackOverheads` does). `sharedHops`: one
 * distribution for every mode, fitted on both probes together, or on the probes named (the hops are
 * the same processes; one probe's tail rests on a few slow requests, docs/evaluation.md §5).
 * `hopsByBusy` (with `sharedHops`): the hops' busy term (`requestOverheadPerIdleUs`), fitted on two
 * probes of one mode at two rates (`hopBusySlope`).
 */
export function fitRequestOverheads(
  probes: StackProbes,
  cal: Calibration,
  sim: ProbeSimulator,
  options: {
    sharedHops?: boolean | ReadonlyArray<keyof StackProbes>;
    hopsByBusy?: readonly [keyof StackProbes, keyof StackProbes];
    /**
     * Fit `hybridBusyHopSteps` on this (hybrid) probe's TTFT P95. If the probe is among the shared
     * hops' probes, the hops are refitted around the term (twice); if not (since m15l), the term is
     * fitted once on top of the hops, which it cannot move.
     */
    hybridBusyHops?: keyof StackProbes;
    /** The most steps `hybridBusyHopSteps` may reach (default `MAX_BUSY_HOP_STEPS`). */
    maxHybridBusyHopSteps?: number;
    /**
     * With `hopsByBusy`: the busy term reads each request's wake fraction with this time constant
     * (`requestOverheadWakeTauS`, since m15o; e.g. `HOP_WAKE_TAU_S`) over [0, 1], reference 0,
     * instead of the probes' smoothed idle fractions; the slope is fitted on the same two probes.
     */
    hopWakeTauS?: number;
  } = {},
): Calibration {
  if (!cal.stepPeriods) throw new RangeError("fitRequestOverheads needs calibration.stepPeriods");
  const bare: Calibration = { ...bareCalibration(cal), streamEndUs: 0 };
  const { coupledLow: lo, coupledHigh: hi } = probes;
  // One number for both coupled probes: their simulated mean TPOTs summed onto the measured sum.
  const tpots = (x: number): number =>
    (sim(lo, { ...bare, streamEndUs: x }).tpotMeanMs + sim(hi, { ...bare, streamEndUs: x }).tpotMeanMs) * 1000;
  const streamEndUs = solveMonotone(tpots, (lo.tpotMeanMs + hi.tpotMeanMs) * 1000);
  const withEnd: Calibration = { ...bare, streamEndUs };
  if (options.sharedHops) {
    const keys: ReadonlyArray<keyof StackProbes> =
      options.sharedHops === true ? ["coupledLow", "disaggregated"] : options.sharedHops;
    const on = keys.map((k) => probes[k]);
    if (on.length === 0) throw new RangeError("sharedHops names no probe to fit the hops on");
    const shared = (k: Calibration): Calibration => {
      const both = fitRequest(on, k, sim, "both");
      return {
        ...k,
        requestOverheadUs: both.median,
        requestOverheadP95Us: both.p95,
        remoteRequestOverheadUs: both.median,
        remoteRequestOverheadP95Us: both.p95,
      };
    };
    // The hybrid worker's busy hops (`hybridBusyHopSteps`) on top of the shared hops: fitted on its
    // probe with the hops as fitted. With the hybrid probe among the hops' probes, the hops again
    // with the term (the probe's busy requests no longer need the shared tail), twice; without it
    // (since m15l), once: the hops cannot move with the term, so a slow hybrid probe round is left
    // to the term alone, within its bound.
    const cap = options.maxHybridBusyHopSteps ?? MAX_BUSY_HOP_STEPS;
    const withBusyHops = (fit: (k: Calibration) => Calibration, k: Calibration): Calibration => {
      let out = fit({ ...k, hybridBusyHopSteps: 0 });
      if (!options.hybridBusyHops) return out;
      const probe = probes[options.hybridBusyHops];
      if (!keys.includes(options.hybridBusyHops))
        return { ...out, hybridBusyHopSteps: hybridBusyHopSteps(probe, out, sim, cap) };
      for (let round = 0; round < 2; round++) {
        const steps = hybridBusyHopSteps(probe, out, sim, cap);
        out = fit({ ...k, hybridBusyHopSteps: steps });
      }
      return out;
    };
    if (!options.hopsByBusy) return withBusyHops(shared, withEnd);
    const [idle, busy] = options.hopsByBusy.map((key) => probes[key]) as [MeasuredProbe, MeasuredProbe];
    const term: Pick<Calibration, "requestOverheadIdleRef" | "requestOverheadIdleRange" | "requestOverheadWakeTauS"> =
      options.hopWakeTauS !== undefined && options.hopWakeTauS > 0
        ? { requestOverheadIdleRef: 0, requestOverheadIdleRange: [0, 1], requestOverheadWakeTauS: options.hopWakeTauS }
        : hopBusyTerm(idle, busy, on);
    // The hops at the reference first, then the slope with them, then the hops again with the
    // slope (it moves each probe's hops by its distance from the reference, which nets out in the
    // sum only roughly: the probes' idle fractions are clamped to the slope's span).
    const first = shared({ ...withEnd, ...term, requestOverheadPerIdleUs: 0 });
    const slope = hopBusySlope(idle, busy, first, sim);
    return withBusyHops(shared, { ...withEnd, ...term, requestOverheadPerIdleUs: slope });
  }
  const local = fitRequest(lo, withEnd, sim, false);
  const remote = fitRequest(probes.disaggregated, withEnd, sim, true);
  return {
    ...withEnd,
    requestOverheadUs: local.median,
    requestOverheadP95Us: local.p95,
    remoteRequestOverheadUs: remote.median,
    remoteRequestOverheadP95Us: remote.p95,
  };
}

/**
 * The busy term's span and reference: the idle fractions between the two probes' (a linear term is
 * evidence only between the rates that fitted it), and the mean idle fraction of the probes the
 * hops are fitted on, each weighing as their figures do in the fit (equally), clamped to the span.
 */
function hopBusyTerm(
  idle: MeasuredProbe,
  busy: MeasuredProbe,
  on: readonly MeasuredProbe[],
): Pick<Calibration, "requestOverheadIdleRef" | "requestOverheadIdleRange"> {
  const f = [idle, busy, ...on].map((p) => p.busyFraction);
  if (f.some((b) => b === undefined)) throw new RangeError("the hops' busy term needs each probe's busyFraction");
  const lo = 1 - (busy.busyFraction as number);
  const hi = 1 - (idle.busyFraction as number);
  if (!(hi > lo)) throw new RangeError("the hops' busy term needs its first probe less busy than its second");
  const mean = on.reduce((a, p) => a + (1 - (p.busyFraction as number)), 0) / on.length;
  return { requestOverheadIdleRef: Math.min(hi, Math.max(lo, mean)), requestOverheadIdleRange: [lo, hi] };
}

/**
 * The hops' cost per unit of idle fraction, from two probes of one mode at a low and a high rate:
 * the slope that puts the simulated difference of their TTFT P50 (the less busy one's minus the
 * busier one's) on the measured one. The simulator already queues the busier probe's requests
 * longer, so what the measured difference leaves beyond that is the hops'. Never negative: a hop
 * that costs more on a busier machine is queueing, which the simulator prices, not a wake-up.
 */
export function hopBusySlope(idle: MeasuredProbe, busy: MeasuredProbe, k: Calibration, sim: ProbeSimulator): number {
  const gap = (slope: number): number => {
    const c = { ...k, requestOverheadPerIdleUs: slope };
    return (sim(idle, c).ttftP50Ms - sim(busy, c).ttftP50Ms) * 1000;
  };
  return solveMonotone(gap, (idle.ttftP50Ms - busy.ttftP50Ms) * 1000);
}

/**
 * The periods of the step in flight that a hybrid request reaching a stepping worker waits before it
 * queues (`hybridBusyHopSteps`): the value that puts the hybrid probe's simulated TTFT P95 on the
 * measured one, the other overheads as given. Only the probe's requests that reach a busy worker
 * move with it (a fifth of them at 2 req/s), and those are among its slowest. Never negative: a
 * probe the shared hops already over-price gets none.
 */
export function hybridBusyHopSteps(
  probe: ProbeSpec & ProbeSummary,
  k: Calibration,
  sim: ProbeSimulator,
  max = MAX_BUSY_HOP_STEPS,
): number {
  if (probe.mode !== "hybrid") throw new RangeError(`hybridBusyHopSteps needs the hybrid probe, got ${probe.mode}`);
  // In thousandths of a step: the solver's resolution is 1 unit.
  const at = (milli: number): number => sim(probe, { ...k, hybridBusyHopSteps: milli / 1000 }).ttftP95Ms * 1000;
  return Math.min(solveMonotone(at, probe.ttftP95Ms * 1000), max * 1000) / 1000;
}

/**
 * The most steps the busy-hop term may reach: a probe whose tail it cannot reach gets this, not more.
 * 2 since m15l (was 4): m15j's per-request runs measured the wait of a hybrid request that reaches a
 * stepping worker at 6–8 ms at the median over 3.5-ms steps, about two steps (docs/evaluation.md §5,
 * m15j). The term reached 4 only where the hybrid probe's rounds stepped ~23 % slower than its case
 * (11:56, 12:24) or ran long tails (08:31), and priced the case's TTFT 30–54 % high there.
 */
export const MAX_BUSY_HOP_STEPS = 2;

/**
 * The hops' wake-up time constant (s), measured, not fitted on the validation (m15o): over 453
 * requests of four real-mesh runs (coupled at 2 and 12 req/s, disaggregated at 2; 23:49–23:52 UTC),
 * each request's TTFT against the idle gap since the mesh last held a request, a least-absolute-
 * deviation fit of A·(1 − exp(−gap / τ)) plus a per-mode constant was best at τ = 0.5 s (cost
 * 1149 against 1172 at 0.2 s and 1158 at 1 s; docs/evaluation.md §5, m15o). The amplitude is not
 * taken from there: the busy term's slope is fitted on each run's coupled probes.
 */
export const HOP_WAKE_TAU_S = 0.5;
