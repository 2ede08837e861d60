import { expect } from "chai";
import { loneDecodeSteps, validationCluster } from "./test-support";
import { CostModel, DEFAULT_CALIBRATION } from "./cost-model";
import { policyByName } from "./placement";
import { percentile, simulate, type ClusterSpec } from "./simulator";
import {
  atRateMedianBusy,
  fitStepPeriods,
  slopesOf,
  stepPeriodUs,
  type StepPeriodFit,
  type StepShapeSample,
  type StepSlopes,
} from "./step-fit";
import { DEFAULT_WORKLOAD, makeAdapters, makeRequests } from "./workload";

const cluster = validationCluster;

/** Steps of the given shapes whose periods follow `truth` exactly. */
function stepsOf(truth: StepPeriodFit, mode: "coupled" | "disaggregated" | "hybrid"): StepShapeSample[] {
  // sequences, prompt tokens, sequences ending, rank sum, steps
  const shapes = [
    [1, 0, 0, 4, 300],
    [1, 0, 0, 64, 100],
    [1, 0, 1, 8, 25],
    [1, 24, 0, 16, 30],
    [2, 0, 0, 68, 120],
    [2, 0, 0, 12, 80],
    [2, 0, 1, 32, 30],
    [2, 20, 0, 20, 20],
    [4, 0, 0, 100, 90],
    [4, 0, 2, 40, 9],
    [6, 31, 1, 200, 10],
  ] as const;
  return shapes.map(([sequences, prefillTokens, finished, rankSum, count]) => {
    const us = stepPeriodUs(truth, mode, { sequences, prefillTokens, finished, rankSum }) as number;
    return { sequences, tokens: sequences + prefillTokens, prefillTokens, finished, rankSum, count, sumUs: us * count };
  });
}

describe("fitting the engine's step period to the worker's own step timings", () => {
  const truth: StepPeriodFit = {
    fixedUs: { coupled: 2500, disaggregated: 4100, hybrid: 6000 },
    slopes: {
      coupled: { perSequenceUs: 180, perPrefillTokenUs: 35, perFinishUs: 900, perRankUs: 6 },
      disaggregated: { perSequenceUs: 420, perPrefillTokenUs: 40, perFinishUs: 700, perRankUs: 2 },
      hybrid: { perSequenceUs: 2500, perPrefillTokenUs: 60, perFinishUs: 1100, perRankUs: 11 },
    },
    steps: {},
  };

  it("recovers each mode's fixed cost and slopes", () => {
    const fit = fitStepPeriods([
      { mode: "coupled", steps: stepsOf(truth, "coupled") },
      { mode: "disaggregated", steps: stepsOf(truth, "disaggregated") },
      { mode: "hybrid", steps: stepsOf(truth, "hybrid") },
    ]);
    expect(fit.fixedUs.coupled).to.be.closeTo(2500, 1e-6);
    expect(fit.fixedUs.disaggregated).to.be.closeTo(4100, 1e-6);
    expect(fit.fixedUs.hybrid).to.be.closeTo(6000, 1e-6);
    for (const mode of ["coupled", "disaggregated", "hybrid"] as const)
      for (const [k, v] of Object.entries(truth.slopes?.[mode] as StepSlopes) as Array<[keyof StepSlopes, number]>)
        expect(fit.slopes?.[mode]?.[k], `${mode} ${k}`).to.be.closeTo(v, 1e-6);
    expect(fit.steps.coupled).to.equal(814);
  });

  it("drops a slope the data cannot carry (no spread, or negative from noise) instead of inventing one", () => {
    const single: StepShapeSample[] = [{ sequences: 1, tokens: 1, prefillTokens: 0, count: 10, sumUs: 30_000 }];
    const fit = fitStepPeriods([{ mode: "coupled", steps: single }]);
    expect(fit.slopes?.coupled).to.deep.equal({
      perSequenceUs: 0,
      perPrefillTokenUs: 0,
      perFinishUs: 0,
      perRankUs: 0,
      perIdleUs: 0,
      perRowByRankUs: { "0": 0 },
      perRowMeanUs: 0,
    });
    expect(fit.fixedUs.coupled).to.be.closeTo(3000, 1e-6);
    // Busier steps measured faster (another process let go of a core): no negative cost per sequence.
    const noisy: StepShapeSample[] = [
      { sequences: 1, tokens: 1, prefillTokens: 0, count: 10, sumUs: 40_000 },
      { sequences: 3, tokens: 3, prefillTokens: 0, count: 10, sumUs: 30_000 },
    ];
    const n = fitStepPeriods([{ mode: "coupled", steps: noisy }]);
    expect(n.slopes?.coupled?.perSequenceUs).to.equal(0);
    expect(n.fixedUs.coupled).to.be.closeTo(3500, 1e-6);
    expect(stepPeriodUs(n, "hybrid", { sequences: 1, prefillTokens: 0 })).to.equal(undefined);
    expect(() => fitStepPeriods([])).to.throw(RangeError, /no engine steps/);
  });

  it("keeps a rank slope the steps carry and drops one within their noise", () => {
    // 100 one-sequence decode steps at rank 4 and 100 at rank 64, each shape's periods spread by
    // σ = 500 µs (the sum of squares says so); the means differ by `gapUs`.
    const steps = (gapUs: number): StepShapeSample[] =>
      [
        [4, 1000],
        [64, 1000 + gapUs],
      ].map(([rankSum, mean]) => ({
        sequences: 1,
        tokens: 1,
        prefillTokens: 0,
        rankSum: rankSum as number,
        count: 100,
        sumUs: 100 * (mean as number),
        sumSqUs: 100 * ((mean as number) ** 2 + 500 ** 2),
      }));
    const real = fitStepPeriods([{ mode: "coupled", steps: steps(600) }]);
    expect(real.slopes?.coupled?.perRankUs).to.be.closeTo(10, 1e-6);
    expect(real.fixedUs.coupled).to.be.closeTo(960, 1e-6);
    const noise = fitStepPeriods([{ mode: "coupled", steps: steps(10) }]);
    expect(noise.slopes?.coupled?.perRankUs).to.equal(0);
    expect(noise.fixedUs.coupled).to.be.closeTo(1005, 1e-6);
  });

  it("takes the rank's cost from the kernel calibration when given, and fits the rest around it", () => {
    // Probe steps where the rank-64 adapter's steps ran slow for another reason (the measured case:
    // 16 µs per unit of rank fitted, the kernel's 0.1 µs, and the cases' rank-64 steps as fast as
    // their rank-4 ones).
    const shape = loneDecodeSteps;
    // The coupled 10 req/s probes' lone decode steps of the idle run of 14:22 (rank 4 and rank 64, ms).
    const measured = [
      [920, 2180],
      [1280, 1740],
      [930, 820],
    ] as const;
    const runs = measured.map(([r4, r64]) => ({
      mode: "coupled" as const,
      steps: [shape(4, r4, 300), shape(64, r64, 10)],
    }));
    const known = fitStepPeriods(runs, { perRankUs: 0.1 });
    expect(slopesOf(known, "coupled").perRankUs).to.equal(0.1);
    // Nor is the rank-64 adapter's scatter (+1260, +460, −110 µs) taken for a cost of its own.
    expect(slopesOf(known, "coupled").perRowByRankUs).to.deep.equal({ "4": 0 });
    // The rest sits at the steps' mean: a rank-64 step priced at ~1.07 ms, not ~1.6.
    expect(stepPeriodUs(known, "coupled", { sequences: 1, prefillTokens: 0, rankSum: 64 })).to.be.within(1000, 1100);
  });

  it("fits rank within shapes: rank sums that grow with the batch do not take up the per-sequence cost", () => {
    // Within each batch size rank changes nothing, but the cost per sequence is not linear and the
    // larger batches carry larger rank sums: a joint fit gives 1.74 µs per unit of rank here (the
    // measured case: 9.9 µs per rank, and the 12 req/s TPOT over-predicted 32 %).
    const shape = (sequences: number, rankSum: number, mean: number): StepShapeSample => ({
      sequences,
      tokens: sequences,
      prefillTokens: 0,
      rankSum,
      count: 100,
      sumUs: 100 * mean,
      sumSqUs: 100 * (mean ** 2 + 100 ** 2),
    });
    const steps = [shape(1, 4, 1000), shape(1, 64, 1000), shape(2, 68, 1800), shape(2, 128, 1800), shape(3, 300, 3000)];
    const fit = fitStepPeriods([{ mode: "coupled", steps }]);
    expect(fit.slopes?.coupled?.perRankUs).to.equal(0);
    expect(fit.slopes?.coupled?.perSequenceUs).to.be.closeTo(6800 / 7, 1e-6);
    expect(fit.fixedUs.coupled).to.be.closeTo(6600 / 7, 1e-6);
  });

  // Probe runs of the same shapes at different executor busy fractions: each step costs the shape's
  // period plus `idleUs` · (1 − busy), and each run's steps are off by its own `noiseUs` (the
  // machine's state in that run, shared by all its steps).
  const runsAt = (
    busy: readonly number[],
    idleUs: number,
    noiseUs: readonly number[],
  ): Array<{ mode: "coupled"; steps: StepShapeSample[]; busyFraction: number }> =>
    busy.map((u, i) => ({
      mode: "coupled",
      busyFraction: u,
      steps: stepsOf(truth, "coupled").map((s) => {
        const extra = idleUs * (1 - u) + (noiseUs[i % noiseUs.length] as number);
        // 200 µs of spread within each shape, as the worker's sum of squares would report.
        const mean = s.sumUs / s.count + extra;
        return { ...s, sumUs: s.count * mean, sumSqUs: s.count * (mean ** 2 + 200 ** 2) };
      }),
    }));

  it("fits a fixed cost that falls as the executor gets busier, from differences between probe runs", () => {
    // The measured pattern: the same one-sequence decode step slower at 2 req/s than at 10–12.
    const runs = runsAt([0.05, 0.06, 0.18, 0.2, 0.3], 800, [15, -10, 5, -15, 10]);
    const fit = fitStepPeriods(runs);
    const k = slopesOf(fit, "coupled");
    expect(k.perIdleUs).to.be.closeTo(800, 80);
    // The fixed cost is the period at the runs' mean idle fraction (0.84 here), not a fully busy one.
    expect(k.idleRef).to.be.closeTo(0.842, 1e-9);
    expect(fit.fixedUs.coupled).to.be.closeTo(2500 + 800 * 0.842, 80);
    expect(k.perSequenceUs).to.be.closeTo(180, 1);
    // A busy run's lone decode step is priced at its own busy fraction: without the idle term one
    // fixed cost sits between the runs and over-prices it by ~0.2 ms (8 %).
    const lone = { sequences: 1, prefillTokens: 0, rankSum: 4 };
    const truthAt = (u: number): number => 2500 + 6 * 4 + 800 * (1 - u);
    expect(stepPeriodUs(fit, "coupled", { ...lone, busyFraction: 0.3 })).to.be.closeTo(truthAt(0.3), 25);
    expect(stepPeriodUs(fit, "coupled", { ...lone, busyFraction: 0.05 })).to.be.closeTo(truthAt(0.05), 25);
    // A shape without a busy fraction (older callers) pays no idle cost.
    expect(stepPeriodUs(fit, "coupled", lone)).to.be.closeTo(truthAt(1), 80);
  });

  it("keeps a fitted idle cost's fixed cost at the probes' busy fractions, even where a fully busy step would be negative", () => {
    // The coordinator's runs of 20:47 and 21:16: lone decode steps of ~0.6 ms at busy fractions
    // 0.02–0.12 (2 and 12 req/s), ~0.8 ms faster per unit of busy fraction. Extrapolated to a fully
    // busy executor the fixed cost is negative; clamped to 0 it priced every step ~0.16 ms high.
    const small: StepPeriodFit = { ...truth, fixedUs: { coupled: 450 } };
    const idleUs = 800;
    const busy = [0.02, 0.025, 0.03, 0.11, 0.12, 0.13];
    const noise = [10, -10, 5, -5, 8, -8];
    const runs = busy.map((u, i) => ({
      mode: "coupled" as const,
      busyFraction: u,
      steps: stepsOf(small, "coupled").map((s) => {
        // The period at busy fraction u: `small`'s, plus the idle cost relative to 0.95 idle.
        const mean = s.sumUs / s.count + idleUs * (1 - u - 0.95) + (noise[i] as number);
        return { ...s, sumUs: s.count * mean, sumSqUs: s.count * (mean ** 2 + 50 ** 2) };
      }),
    }));
    const fit = fitStepPeriods(runs);
    const k = slopesOf(fit, "coupled");
    expect(k.perIdleUs).to.be.closeTo(idleUs, 60);
    expect(fit.fixedUs.coupled).to.be.greaterThan(0);
    // Every run's steps priced at their own busy fraction, as they were measured (within the noise).
    for (const r of runs) {
      const measured = r.steps.reduce((a, s) => a + s.sumUs, 0) / r.steps.reduce((a, s) => a + s.count, 0);
      const priced =
        r.steps.reduce(
          (a, s) => a + s.count * (stepPeriodUs(fit, "coupled", { ...s, busyFraction: r.busyFraction }) ?? 0),
          0,
        ) / r.steps.reduce((a, s) => a + s.count, 0);
      expect(priced, `busy ${r.busyFraction}`).to.be.closeTo(measured, 15);
    }
    // A lone decode step at a busy fraction between the probes' (the 4 req/s case's, 0.055).
    const lone = { sequences: 1, prefillTokens: 0, rankSum: 4 };
    const truthAt = (u: number): number => 450 + 6 * 4 + idleUs * (1 - u - 0.95);
    expect(stepPeriodUs(fit, "coupled", { ...lone, busyFraction: 0.055 })).to.be.closeTo(truthAt(0.055), 15);
    // Never below 0, however far outside the probes a shape is priced.
    expect(stepPeriodUs(fit, "coupled", { ...lone, busyFraction: 1 })).to.be.at.least(0);
  });

  it("drops an idle cost the runs do not tell apart from their own run-to-run noise", () => {
    // Runs 300 µs apart with no order by busy fraction (what three idle runs per case showed).
    const flat = fitStepPeriods(runsAt([0.05, 0.06, 0.18, 0.2, 0.3], 0, [150, -150, 150, -150, 150]));
    expect(slopesOf(flat, "coupled").perIdleUs).to.equal(0);
    // Two runs cannot tell a slope from the noise at all; nor runs without a busy fraction.
    const two = fitStepPeriods(runsAt([0.05, 0.3], 800, [0]));
    expect(slopesOf(two, "coupled").perIdleUs).to.equal(0);
    const untimed = runsAt([0.05, 0.06, 0.2, 0.3], 800, [0]).map(({ mode, steps }) => ({ mode, steps }));
    expect(slopesOf(fitStepPeriods(untimed), "coupled").perIdleUs).to.equal(0);
  });

  it("fits no idle cost on runs of one rate, whose busy fractions barely differ", () => {
    // The hybrid probe's three rounds at 2 req/s in the run of 02:56 (seeds 2, 3, 4): busy 0.109–0.116,
    // and the rounds' steps 100 µs apart in the order of their busy fractions (the requests' and the
    // machine's doing, not the idleness). A slope through them is ~14 ms per unit of idle fraction,
    // and priced at a case's busy fraction of 0.35 every step comes out at 0.
    const oneRate = runsAt([0.109, 0.112, 0.116], 0, [100, 0, -100]);
    const fit = fitStepPeriods(oneRate);
    expect(slopesOf(fit, "coupled").perIdleUs).to.equal(0);
    const lone = { sequences: 1, prefillTokens: 0, rankSum: 4 };
    expect(stepPeriodUs(fit, "coupled", { ...lone, busyFraction: 0.35 })).to.be.closeTo(2500 + 6 * 4, 30);
    // Probes at two rates (idle fractions 0.1 apart) still fit it.
    const twoRates = runsAt([0.03, 0.035, 0.04, 0.12, 0.13, 0.14], 800, [10, -10, 5, -5, 8, -8]);
    expect(slopesOf(fitStepPeriods(twoRates), "coupled").perIdleUs).to.be.closeTo(800, 80);
  });

  it("lends the coupled probes' idle cost to a mode probed at one rate, within the idle fractions it was fitted over", () => {
    // Coupled probes at 2 and 12 req/s fit the machine's idle cost (800 µs per unit of idle
    // fraction); the disaggregated probe's three rounds at 2 req/s (busy 0.03–0.04) cannot.
    const coupled = runsAt([0.03, 0.035, 0.04, 0.12, 0.13, 0.14], 800, [10, -10, 5, -5, 8, -8]);
    const disaggregated = runsAt([0.03, 0.035, 0.04], 800, [10, -10, 5]).map((r) => ({
      ...r,
      mode: "disaggregated" as const,
    }));
    // Within the lender's own idle fractions (the model before m15l; since, see the next test).
    const fit = fitStepPeriods([...coupled, ...disaggregated], { shiftIdle: false });
    const own = slopesOf(fit, "coupled");
    const lent = slopesOf(fit, "disaggregated");
    expect(own.perIdleUs).to.be.closeTo(800, 80);
    expect(own.idleRange).to.equal(undefined);
    expect(lent.perIdleUs).to.equal(own.perIdleUs);
    expect(lent.idleRange?.[0]).to.be.closeTo(0.86, 1e-9);
    expect(lent.idleRange?.[1]).to.be.closeTo(0.97, 1e-9);
    // The case at 4 req/s (busy 0.07) is priced ~24 µs below its probe's steps, as the truth is.
    const lone = { sequences: 1, prefillTokens: 0, rankSum: 4 };
    const at = (u: number): number => stepPeriodUs(fit, "disaggregated", { ...lone, busyFraction: u }) ?? NaN;
    expect(at(0.035) - at(0.07)).to.be.closeTo(800 * 0.035, 8);
    // Busier than the coupled probes ran (a hybrid case's 0.35): priced at their busiest, not beyond.
    expect(at(0.35)).to.equal(at(0.14));
    expect(at(0.01)).to.equal(at(0.03));
    // Without lending (the model before m15k), none.
    expect(
      slopesOf(fitStepPeriods([...coupled, ...disaggregated], { shareIdle: false }), "disaggregated").perIdleUs,
    ).to.equal(0);
    // Nothing to lend when no mode spans two rates.
    expect(slopesOf(fitStepPeriods(disaggregated), "disaggregated").perIdleUs).to.equal(0);
  });

  it("lends the idle cost within the lender's span's width of the borrower's own probes, so a busier case's step moves by at most what the lender's did", () => {
    // Coupled probes at 2 and 12 req/s: 3000 µs per unit of idle fraction over idle 0.86–0.97
    // (0.33 ms between their rates, as in the stored runs). A hybrid-like mode probed at one rate
    // whose rounds spread 0.07 of busy fraction (0.10–0.17: one round stepped slower, so it was
    // busier, as at 12:24), priced at a case 0.25 busier.
    const coupled = runsAt([0.03, 0.035, 0.04, 0.12, 0.13, 0.14], 3000, [10, -10, 5, -5, 8, -8]);
    const hybrid = runsAt([0.1, 0.13, 0.17], 0, [0, 0, 0]).map((r) => ({ ...r, mode: "hybrid" as const }));
    const fit = fitStepPeriods([...coupled, ...hybrid]);
    const lent = slopesOf(fit, "hybrid");
    // Borrowed although its rounds span more than MIN_IDLE_SPREAD (0.05): less than the lender's 0.11.
    expect(lent.perIdleUs).to.be.closeTo(slopesOf(fit, "coupled").perIdleUs as number, 1e-9);
    expect(lent.idleRange?.[0]).to.be.closeTo(0.83 - 0.11, 1e-9);
    expect(lent.idleRange?.[1]).to.be.closeTo(0.9 + 0.11, 1e-9);
    const lone = { sequences: 1, prefillTokens: 0, rankSum: 4 };
    const at = (u: number): number => stepPeriodUs(fit, "hybrid", { ...lone, busyFraction: u }) ?? NaN;
    // The probes' own rounds priced as their mean (no slope of their own), the case at busy 0.38
    // 3000 × (0.83 − 0.72) below the slowest round's idle, and no further at 0.6.
    const drop = at(0.17) - at(0.38);
    expect(drop).to.be.closeTo((lent.perIdleUs as number) * 0.11, 1);
    expect(at(0.6)).to.equal(at(0.38));
    // The model before m15l: idle 0.62 and 0.83 both clamp to the lender's busiest, 0.86 — no term.
    const before = fitStepPeriods([...coupled, ...hybrid], { shiftIdle: false });
    expect(slopesOf(before, "hybrid").perIdleUs).to.equal(0);
    // A mode whose own rounds span as much idle as the lender's fits (or drops) its own slope.
    const wide = runsAt([0.02, 0.08, 0.16], 0, [0, 0, 0]).map((r) => ({ ...r, mode: "hybrid" as const }));
    expect(slopesOf(fitStepPeriods([...coupled, ...wide]), "hybrid").idleRange).to.equal(undefined);
  });

  it("fits a mode's own idle slope across its probes' two rates, however close their idle fractions", () => {
    // The measured pattern (40-s runs of 04:25–05:45): coupled probes at 2 and 12 req/s, 4000 µs per
    // unit of idle fraction; the disaggregated mode's steps fall much faster with busy (16000 µs per
    // unit), and its probes at 2 and 4 req/s span only ~0.02 of busy fraction (0.03–0.04, 0.05–0.06).
    const coupled = runsAt([0.03, 0.035, 0.04, 0.12, 0.13, 0.14], 4000, [10, -10, 5, -5, 8, -8]).map((r, i) => ({
      ...r,
      rate: i < 3 ? 2 : 12,
    }));
    const disaggregated = runsAt([0.03, 0.035, 0.04, 0.05, 0.055, 0.06], 16000, [10, -10, 5, -5, 8, -8]).map(
      (r, i) => ({ ...r, mode: "disaggregated" as const, rate: i < 3 ? 2 : 4 }),
    );
    const fit = fitStepPeriods([...coupled, ...disaggregated]);
    const own = slopesOf(fit, "disaggregated");
    expect(own.perIdleUs).to.be.closeTo(16000, 1600);
    // Its own slope applies where it was fitted: no borrowed range.
    expect(own.idleRange).to.equal(undefined);
    // The coupled mode keeps its own, and stays the lender for a mode probed at one rate.
    expect(slopesOf(fit, "coupled").perIdleUs).to.be.closeTo(4000, 400);
    const hybrid = runsAt([0.1, 0.105, 0.11], 0, [0, 0, 0]).map((r) => ({ ...r, mode: "hybrid" as const, rate: 2 }));
    const withHybrid = fitStepPeriods([...coupled, ...disaggregated, ...hybrid]);
    expect(slopesOf(withHybrid, "hybrid").perIdleUs).to.be.closeTo(
      slopesOf(withHybrid, "coupled").perIdleUs as number,
      1e-9,
    );
    // A 4 req/s case (busy 0.057) is priced as the truth is, 16000 × 0.022 below the 2 req/s probe.
    const lone = { sequences: 1, prefillTokens: 0, rankSum: 4 };
    const at = (u: number): number => stepPeriodUs(fit, "disaggregated", { ...lone, busyFraction: u }) ?? NaN;
    expect(at(0.035) - at(0.057)).to.be.closeTo(16000 * 0.022, 40);
    // The same runs without their rates (the model before m15q): the spread is under MIN_IDLE_SPREAD,
    // so the mode borrows the coupled slope and prices the case's step ~0.15 ms too slow.
    const unrated = fitStepPeriods([...coupled, ...disaggregated].map(({ rate: _rate, ...r }) => r));
    const borrowed = slopesOf(unrated, "disaggregated");
    expect(borrowed.perIdleUs).to.be.closeTo(slopesOf(unrated, "coupled").perIdleUs as number, 1e-9);
    const before = stepPeriodUs(unrated, "disaggregated", { ...lone, busyFraction: 0.057 }) as number;
    expect(before - at(0.057)).to.be.greaterThan(100);
    // One rate whose rounds drifted 0.03 apart fits no slope of its own: the spread must be the rates'.
    const oneRate = runsAt([0.03, 0.045, 0.06], 16000, [10, -10, 5]).map((r) => ({
      ...r,
      mode: "disaggregated" as const,
      rate: 2,
    }));
    expect(slopesOf(fitStepPeriods(oneRate), "disaggregated").perIdleUs).to.equal(0);
  });

  it("fits the idle term in ln(1 / busy) on request: a step that falls steeply, then flattens (m15r)", () => {
    // Steps that fall by 300 µs per unit of ln(1 / busy): 2 req/s (busy 0.03) to 4 (0.055) costs as
    // much as 4 to 12 (0.12) less than twice that, the shape the stored coupled runs show.
    const LOG_US = 300;
    const logRuns = (busy: readonly number[], noise: readonly number[]) =>
      runsAt(busy, 0, noise).map((r, i) => ({
        ...r,
        rate: busy[i]! < 0.08 ? 2 : 12,
        steps: r.steps.map((s) => {
          const mean = s.sumUs / s.count + LOG_US * Math.log(1 / busy[i]!);
          return { ...s, sumUs: s.count * mean, sumSqUs: s.count * (mean ** 2 + 200 ** 2) };
        }),
      }));
    const runs = logRuns([0.028, 0.032, 0.036, 0.11, 0.12, 0.13], [10, -10, 5, -5, 8, -8]);
    const lone = { sequences: 1, prefillTokens: 0, rankSum: 4 };
    const log = fitStepPeriods(runs, { idleScale: "log" });
    const k = slopesOf(log, "coupled");
    expect(k.idleScale).to.equal("log");
    expect(k.perIdleUs).to.be.closeTo(LOG_US, 30);
    const at = (fit: StepPeriodFit, u: number): number =>
      stepPeriodUs(fit, "coupled", { ...lone, busyFraction: u }) ?? NaN;
    const truthDrop = LOG_US * Math.log(0.055 / 0.032);
    expect(at(log, 0.032) - at(log, 0.055)).to.be.closeTo(truthDrop, 30);
    // The line in 1 − busy through the same runs prices the middle rate's step too slow.
    const linear = fitStepPeriods(runs);
    expect(slopesOf(linear, "coupled").idleScale).to.equal(undefined);
    expect(at(linear, 0.032) - at(linear, 0.055)).to.be.lessThan(truthDrop - 40);
    // An own log slope applies within its probes' span: an idle simulated executor is not priced
    // beyond the idlest probe's step.
    expect(at(log, 0.001)).to.be.closeTo(at(log, 0.028), 1e-6);
    // The spread tests stay on 1 − busy: one rate whose rounds drift 0.01 apart fits no slope,
    // though ln(1 / busy) spreads 0.3 over them.
    const oneRate = logRuns([0.03, 0.035, 0.04], [10, -10, 5]).map((r) => ({ ...r, rate: 2 }));
    expect(slopesOf(fitStepPeriods(oneRate, { idleScale: "log" }), "coupled").perIdleUs).to.equal(0);
  });

  it("fits the idle term in 1 / busy: the drop from 2 to 4 req/s as large as from 4 to 12 (m15u)", () => {
    // Steps that grow by 15 µs per unit of 1 / busy, as the stored coupled runs' lone decode steps
    // do: the 4 req/s case (busy 0.058) sits about halfway between the 2 and 12 req/s probes (0.035,
    // 0.14), where a line in 1 − busy puts it a fifth of the way down.
    const INV_US = 15;
    const invRuns = (
      busy: readonly number[],
      mode: "coupled" | "disaggregated" | "hybrid",
      rate: (u: number) => number,
    ) =>
      runsAt(busy, 0, [10, -10, 5, -5, 8, -8]).map((r, i) => ({
        ...r,
        mode,
        rate: rate(busy[i]!),
        steps: r.steps.map((s) => {
          const mean = s.sumUs / s.count + INV_US / busy[i]!;
          return { ...s, sumUs: s.count * mean, sumSqUs: s.count * (mean ** 2 + 200 ** 2) };
        }),
      }));
    const coupled = invRuns([0.032, 0.035, 0.038, 0.13, 0.14, 0.15], "coupled", (u) => (u < 0.08 ? 2 : 12));
    const lone = { sequences: 1, prefillTokens: 0, rankSum: 4 };
    const at = (fit: StepPeriodFit, mode: "coupled" | "disaggregated" | "hybrid", u: number): number =>
      stepPeriodUs(fit, mode, { ...lone, busyFraction: u }) ?? NaN;
    const inverse = fitStepPeriods(coupled, { idleScale: "inverse" });
    const k = slopesOf(inverse, "coupled");
    expect(k.idleScale).to.equal("inverse");
    expect(k.perIdleUs).to.be.closeTo(INV_US, 1.5);
    const truthDrop = INV_US * (1 / 0.035 - 1 / 0.058);
    expect(at(inverse, "coupled", 0.035) - at(inverse, "coupled", 0.058)).to.be.closeTo(truthDrop, 20);
    // The line in 1 − busy through the same runs gives under half that drop: the middle rate's step
    // priced ~0.1 ms too slow.
    const linear = fitStepPeriods(coupled);
    expect(at(linear, "coupled", 0.035) - at(linear, "coupled", 0.058)).to.be.lessThan(truthDrop / 2);
    // Within its probes' span only: an idle simulated executor is priced as the idlest probe's step.
    expect(at(inverse, "coupled", 0.002)).to.be.closeTo(at(inverse, "coupled", 0.032), 1e-6);
    // A mode probed at one rate borrows the slope on the same scale, unless listed in `lendLinear`:
    // then it takes the lender's slope in 1 − busy (its steps' idle term as the model before).
    const one = (mode: "disaggregated" | "hybrid") => invRuns([0.1, 0.105, 0.11], mode, () => 2).slice(0, 3);
    const both = [...coupled, ...one("disaggregated"), ...one("hybrid")];
    const mixed = fitStepPeriods(both, { idleScale: "inverse", lendLinear: ["hybrid"] });
    expect(slopesOf(mixed, "disaggregated").idleScale).to.equal("inverse");
    expect(slopesOf(mixed, "disaggregated").perIdleUs).to.be.closeTo(k.perIdleUs as number, 1e-9);
    expect(slopesOf(mixed, "hybrid").idleScale).to.equal(undefined);
    expect(slopesOf(mixed, "hybrid").perIdleUs).to.be.closeTo(slopesOf(linear, "coupled").perIdleUs as number, 1e-9);
    // `lendLinear: true`: every borrower on the linear slope (m15r's option).
    const allLinear = fitStepPeriods(both, { idleScale: "inverse", lendLinear: true });
    expect(slopesOf(allLinear, "disaggregated").idleScale).to.equal(undefined);
    expect(slopesOf(allLinear, "coupled").idleScale).to.equal("inverse");
  });

  it("regresses each rate's rounds at their median busy fraction on request (m15r)", () => {
    // Six rounds at two rates whose steps follow 4000 µs per unit of idle fraction at the rate's
    // busy fraction; one round per rate stepped 60 µs slower and so read busier (its summed periods
    // over its length), the others faster and idler. On their own busy fractions the slow rounds
    // sit against the slope; at the rate's median they do not.
    const base = runsAt([0.03, 0.03, 0.03, 0.12, 0.12, 0.12], 4000, [60, -30, -30, 60, -30, -30]);
    const read = [0.036, 0.029, 0.028, 0.128, 0.118, 0.117];
    const runs = base.map((r, i) => ({ ...r, busyFraction: read[i]!, rate: i < 3 ? 2 : 12 }));
    const own = slopesOf(fitStepPeriods(runs), "coupled").perIdleUs as number;
    const median = slopesOf(fitStepPeriods(runs, { rateMedianBusy: "all" }), "coupled").perIdleUs as number;
    const slopeOnly = slopesOf(fitStepPeriods(runs, { rateMedianBusy: "slope" }), "coupled").perIdleUs as number;
    expect(slopeOnly).to.be.closeTo(median, 1e-6);
    expect(median).to.be.closeTo(4000, 200);
    expect(Math.abs(own - 4000)).to.be.greaterThan(Math.abs(median - 4000));
    // Runs without a rate keep their own busy fraction.
    expect(atRateMedianBusy(runs.map(({ rate: _rate, ...r }) => r)).map((r) => r.busyFraction)).to.deep.equal(read);
    expect(atRateMedianBusy(runs).map((r) => r.busyFraction)).to.deep.equal([0.029, 0.029, 0.029, 0.118, 0.118, 0.118]);
  });

  it("prices the simulator's steps with the fitted period: a lone request decodes at the fixed cost", () => {
    const workload = { ...DEFAULT_WORKLOAD, adapters: 4, rate: 0.2, duration: 30, seed: 3 };
    const slo = { ttftMs: 1e9, tpotMs: 1e9 };
    const run = (k: Partial<typeof DEFAULT_CALIBRATION>, mode: ClusterSpec["mode"] = "coupled") =>
      simulate(
        workload,
        { ...cluster, mode },
        policyByName("rank-aware"),
        new CostModel({ ...DEFAULT_CALIBRATION, ...k }),
        slo,
      );
    // One request every 5 s, each alone in its batch: every decode step is one sequence, no prompt.
    const c = truth.slopes?.coupled as StepSlopes;
    const flat: StepPeriodFit = { ...truth, slopes: { ...truth.slopes, coupled: { ...c, perRankUs: 0 } } };
    const noFinish = (fit: StepPeriodFit): StepPeriodFit => ({
      ...fit,
      slopes: {
        ...fit.slopes,
        coupled: { ...slopesOf(fit, "coupled"), perFinishUs: 0 },
        disaggregated: { ...slopesOf(fit, "disaggregated"), perFinishUs: 0 },
      },
    });
    const r = run({ stepPeriods: noFinish(flat) });
    expect(r.completed).to.be.greaterThan(0);
    expect(r.tpotMs.mean).to.be.closeTo(2.5, 1e-6);
    // The prefill step is the first token: the fixed cost plus the prompt's tokens.
    expect(r.ttftMs.p50).to.be.greaterThan(2.5);
    // The step a request ends in, and its stream's end, fall on its last gap only.
    const requests = makeRequests(workload, makeAdapters(workload)).filter((q) => q.outputTokens > 1);
    const want = (endUs: number): number =>
      requests.reduce((a, q) => a + 2.5 + (0.9 + endUs / 1000) / (q.outputTokens - 1), 0) / requests.length;
    expect(requests).to.have.length(r.completed);
    expect(run({ stepPeriods: flat }).tpotMs.mean).to.be.closeTo(want(0), 1e-6);
    expect(run({ stepPeriods: flat, streamEndUs: 4000 }).tpotMs.mean).to.be.closeTo(want(4000), 1e-6);
    const d = run(
      {
        stepPeriods: {
          ...noFinish(flat),
          slopes: { disaggregated: { ...(truth.slopes?.disaggregated as StepSlopes), perFinishUs: 0, perRankUs: 0 } },
        },
      },
      "disaggregated",
    );
    expect(d.tpotMs.mean).to.be.closeTo(4.1, 1e-6);
    // With a rank slope each lone decode step costs its adapter's rank on top.
    const rank = new Map(makeAdapters(workload).map((a) => [a.id, a.rank]));
    const ranked = requests.reduce((a, q) => a + 2.5 + (c.perRankUs * (rank.get(q.adapter) as number)) / 1000, 0);
    expect(new Set(rank.values()).size).to.be.greaterThan(1);
    expect(run({ stepPeriods: noFinish(truth) }).tpotMs.mean).to.be.closeTo(ranked / requests.length, 1e-6);
  });

  // Lone decode steps (σ 100 µs within a shape) of three probe runs: rank 4 at 1000 µs, rank 24
  // `slowUs` slower, rank 64 as fast as rank 4; each run off by its own `noiseUs`. The probes draw
  // mostly the rank-24 adapter, as the probes' seed does (45 % of their lone decode steps).
  const adapterRuns = (slowUs: readonly number[], noiseUs: readonly number[]) =>
    noiseUs.map((noise, i) => ({
      mode: "coupled" as const,
      steps: (
        [
          [4, 0, 120],
          [24, slowUs[i % slowUs.length] as number, 300],
          [64, 0, 20],
        ] as const
      ).map(([rankSum, extra, count]) => {
        return loneDecodeSteps(rankSum, 1000 + extra + noise, count);
      }),
    }));

  it("prices a batch row by its adapter, so probes that drew a slow adapter do not slow the cases' steps", () => {
    const fit = fitStepPeriods(adapterRuns([300, 250, 350], [20, -30, 10]), { perRankUs: 0.1 });
    const k = slopesOf(fit, "coupled");
    // Relative to the probes' most frequent adapter (rank 24): rank 4 and 64 cost 300 µs less
    // (less the kernel's 0.1 µs per unit of rank, priced apart).
    expect(k.perRowByRankUs?.["4"]).to.be.closeTo(-298, 0.5);
    expect(k.perRowByRankUs?.["64"]).to.be.closeTo(-304, 0.5);
    // A case's lone rank-4 decode step is priced as measured (~1.0 ms), not at the probes' mix
    // (~1.2 ms: the 12 req/s case's TPOT 28 % high when a step's adapter did not enter its price).
    const lone = (rank: number): number =>
      stepPeriodUs(fit, "coupled", { sequences: 1, prefillTokens: 0, rankSum: rank, ranks: [rank] }) as number;
    expect(lone(4)).to.be.closeTo(1000, 10);
    expect(lone(64)).to.be.closeTo(1000, 15);
    expect(lone(24)).to.be.closeTo(1300, 10);
    // Rows known: each row's adapter; unknown (a measured shape of several rows): the probes' mean row.
    expect(stepPeriodUs(fit, "coupled", { sequences: 2, prefillTokens: 0, rankSum: 28, ranks: [4, 24] })).to.be.closeTo(
      (fit.fixedUs.coupled as number) + 2.8 + (k.perRowByRankUs?.["4"] as number),
      1e-6,
    );
    expect(k.perRowMeanUs).to.be.closeTo((-300 * 140) / 440, 2);
    // An adapter the probes never ran costs the mean row.
    expect(stepPeriodUs(fit, "coupled", { sequences: 1, prefillTokens: 0, ranks: [32] })).to.be.closeTo(
      (fit.fixedUs.coupled as number) + (k.perRowMeanUs as number),
      1e-6,
    );
  });

  it("drops an adapter's cost the runs do not tell apart from their own scatter", () => {
    const fit = fitStepPeriods(adapterRuns([300, -250, 20], [20, -30, 10]), { perRankUs: 0.1 });
    // Only the most frequent adapter's row is priced (at 0): every other adapter costs the mean row.
    const k = slopesOf(fit, "coupled");
    expect(k.perRowByRankUs).to.deep.equal({ "24": 0 });
    expect(k.perRowMeanUs).to.equal(0);
    // Fewer than three runs: no adapter cost either.
    const two = fitStepPeriods(adapterRuns([300], [20, -30]), { perRankUs: 0.1 });
    expect(slopesOf(two, "coupled").perRowByRankUs).to.deep.equal({ "24": 0 });
  });

  it("simulates each step's rows with their adapters' costs, the same for a seed", () => {
    const workload = { ...DEFAULT_WORKLOAD, adapters: 4, rate: 0.2, duration: 30, seed: 3 };
    const base: StepPeriodFit = {
      fixedUs: { coupled: 2500 },
      slopes: { coupled: { perSequenceUs: 0, perPrefillTokenUs: 0, perFinishUs: 0, perRankUs: 0 } },
      steps: {},
    };
    const rank = new Map(makeAdapters(workload).map((a) => [a.id, a.rank]));
    const slow = [...rank.values()][0] as number;
    const withRow: StepPeriodFit = {
      ...base,
      slopes: { coupled: { ...(base.slopes?.coupled as StepSlopes), perRowByRankUs: { [String(slow)]: 700 } } },
    };
    const tpot = (fit: StepPeriodFit): number =>
      simulate(
        workload,
        cluster,
        policyByName("rank-aware"),
        new CostModel({ ...DEFAULT_CALIBRATION, stepPeriods: fit }),
        { ttftMs: 1e9, tpotMs: 1e9 },
      ).tpotMs.mean;
    // Lone requests: a request of the slow adapter decodes at 3.2 ms a token, the others at 2.5.
    const requests = makeRequests(workload, makeAdapters(workload)).filter((q) => q.outputTokens > 1);
    const slowShare = requests.filter((q) => rank.get(q.adapter) === slow).length / requests.length;
    expect(slowShare).to.be.within(0.01, 0.99);
    expect(tpot(withRow) - tpot(base)).to.be.closeTo(0.7 * slowShare, 1e-6);
    expect(tpot(withRow)).to.equal(tpot(withRow));
  });

  it("simulates the idle cost from the executor's own busy fraction: less per step at a higher rate, same for a seed", () => {
    const flat: StepPeriodFit = {
      fixedUs: { coupled: 2500 },
      slopes: { coupled: { perSequenceUs: 0, perPrefillTokenUs: 0, perFinishUs: 0, perRankUs: 0 } },
      steps: {},
    };
    const idle: StepPeriodFit = {
      ...flat,
      slopes: { coupled: { ...(flat.slopes?.coupled as StepSlopes), perIdleUs: 1000 } },
    };
    const tpot = (fit: StepPeriodFit, rate: number): number =>
      simulate(
        { ...DEFAULT_WORKLOAD, adapters: 4, rate, duration: 20, seed: 3 },
        cluster,
        policyByName("rank-aware"),
        new CostModel({ ...DEFAULT_CALIBRATION, stepPeriods: fit }),
        { ttftMs: 1e9, tpotMs: 1e9 },
      ).tpotMs.mean;
    // Lone requests 5 s apart: the executor is idle almost all the time, each step pays ~all of it.
    const lone = tpot(idle, 0.2) - tpot(flat, 0.2);
    expect(lone).to.be.within(0.9, 1.0);
    // At 100 req/s the executor is busy most of the time: each step pays a small part of it.
    const busy = tpot(idle, 100) - tpot(flat, 100);
    expect(busy).to.be.within(0, 0.5 * lone);
    expect(tpot(idle, 100)).to.equal(tpot(idle, 100));
  });

  // Three probe runs' steps as `truth` prices them, each with its first step (a 13-token prefill,
  // rank 24) `extraUs[i]` slower than that: the worker's first request pays one-off costs.
  const withFirst = (mode: "coupled" | "disaggregated", extraUs: readonly number[]) =>
    extraUs.map((extra) => {
      const shape = { sequences: 1, tokens: 13, prefillTokens: 13, finished: 0, rankSum: 24 };
      const us = (stepPeriodUs(truth, mode, shape) as number) + extra;
      return { mode, steps: stepsOf(truth, mode), first: { ...shape, count: 1, sumUs: us, sumSqUs: us * us } };
    });

  it("prices the worker's first step apart: its one-off cost, per mode, without moving the slopes", () => {
    const fit = fitStepPeriods([
      ...withFirst("disaggregated", [80000, 70000, 66000]),
      ...withFirst("coupled", [1, -2, 1]),
    ]);
    expect(fit.firstStepUs?.disaggregated).to.be.closeTo(72000, 1e-6);
    // Within the runs' scatter: no first-step cost.
    expect(fit.firstStepUs?.coupled).to.equal(undefined);
    expect(fit.fixedUs.disaggregated).to.be.closeTo(4100, 1e-6);
    expect(slopesOf(fit, "disaggregated").perPrefillTokenUs).to.be.closeTo(40, 1e-6);
    // Profiles without a first step (older workers) fit as before, with no first-step cost.
    const older = fitStepPeriods(
      withFirst("disaggregated", [80000, 70000, 66000]).map(({ mode, steps }) => ({ mode, steps })),
    );
    expect(older.firstStepUs).to.equal(undefined);
  });

  it("simulates the first step's cost on an executor's first request only, the same for a seed", () => {
    const workload = { ...DEFAULT_WORKLOAD, adapters: 4, rate: 0.2, duration: 40, seed: 3 };
    const flat: StepPeriodFit = {
      fixedUs: { disaggregated: 4000 },
      slopes: { disaggregated: { perSequenceUs: 0, perPrefillTokenUs: 50, perFinishUs: 0, perRankUs: 0 } },
      steps: {},
    };
    const run = (fit: StepPeriodFit) =>
      simulate(
        workload,
        { ...cluster, mode: "disaggregated" },
        policyByName("rank-aware"),
        new CostModel({ ...DEFAULT_CALIBRATION, stepPeriods: fit }),
        { ttftMs: 1e9, tpotMs: 1e9 },
      );
    // Lone requests, no stack overheads: a request's TTFT is its prefill step; the first one's
    // pays the first-step cost on top.
    const requests = makeRequests(workload, makeAdapters(workload));
    const ttft = (extraMs: number): number[] =>
      requests.map((q, i) => 4 + 0.05 * q.promptTokens + (i === 0 ? extraMs : 0)).sort((a, b) => a - b);
    const first = run({ ...flat, firstStepUs: { disaggregated: 72000 } });
    const without = run(flat);
    expect(first.completed).to.equal(requests.length);
    expect(without.ttftMs.p99).to.be.closeTo(percentile(ttft(0), 99), 1e-6);
    expect(first.ttftMs.p99).to.be.closeTo(percentile(ttft(72), 99), 1e-6);
    expect(first.ttftMs.p99 - without.ttftMs.p99).to.be.greaterThan(10);
    expect(first.ttftMs.p50).to.be.closeTo(without.ttftMs.p50, 1e-6);
    // The prefill step carries no decode gap: TPOT is unchanged.
    expect(first.tpotMs.mean).to.be.closeTo(without.tpotMs.mean, 1e-9);
    expect(run({ ...flat, firstStepUs: { disaggregated: 72000 } })).to.deep.equal(first);
  });
});
