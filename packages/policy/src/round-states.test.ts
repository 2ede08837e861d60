import { expect } from "chai";
import { CostModel, DEFAULT_CALIBRATION, type Calibration } from "./cost-model";
import { policyByName } from "./placement";
import {
  FIT_STATE,
  fitRoundScale,
  pooledOverStates,
  type RoundState,
  roundStepScale,
  type StateRound,
  withRoundState,
} from "./round-states";
import { percentile } from "./sim-stats";
import { simulate, type ServingMode } from "./simulator";
import { bareCalibration } from "./stack-fit";
import type { StepPeriodFit } from "./step-fit";
import { loneDecodeSteps, validationCluster } from "./test-support";
import { DEFAULT_WORKLOAD } from "./workload";

/** Fixed step periods per mode and shared log-normal hops (12 ms median, 30 ms P95). */
const measured: Calibration = {
  ...bareCalibration(DEFAULT_CALIBRATION),
  stepPeriods: { fixedUs: { coupled: 2600, disaggregated: 5200, hybrid: 8000 }, steps: {} },
  streamEndUs: 0,
  requestOverheadUs: 12_000,
  requestOverheadP95Us: 30_000,
  remoteRequestOverheadUs: 12_000,
  remoteRequestOverheadP95Us: 30_000,
};

const run = (k: Calibration, seed = 2, mode: ServingMode = "coupled", rate = 4) =>
  simulate(
    {
      ...DEFAULT_WORKLOAD,
      adapters: 12,
      ranks: [4, 8, 16, 32, 64],
      rate,
      duration: 30,
      promptMedian: 24,
      outputMedian: 16,
      lengthSigma: 0.4,
      seed,
    },
    { ...validationCluster, mode, keepTtfts: true },
    policyByName("rank-aware"),
    new CostModel(k),
    { ttftMs: 1e9, tpotMs: 1e9 },
  );

const roundOf = (k: Calibration, s: RoundState): StateRound => {
  const r = run(withRoundState(k, s));
  return {
    ttftsMs: r.ttftsMs ?? [],
    tpotMeanMs: r.tpotMs.mean,
    completed: r.completed,
    throughputTokensPerSecond: r.throughputTokensPerSecond,
  };
};

describe("machine states per round (m15s)", () => {
  it("prices a round's steps by its measured periods over the fit's", () => {
    const fit: StepPeriodFit = {
      fixedUs: { coupled: 500 },
      slopes: { coupled: { perSequenceUs: 0, perPrefillTokenUs: 0, perFinishUs: 0, perRankUs: 0, perIdleUs: 4000 } },
      steps: {},
    };
    // The fit prices a lone step at 500 + 4000 × (1 − busy): 740 µs at busy 0.94.
    const steps = [loneDecodeSteps(8, 1.2 * 740, 100), loneDecodeSteps(16, 1.2 * 740, 50)];
    expect(roundStepScale(steps, fit, "coupled", 0.94)).to.be.closeTo(1.2, 1e-9);
    // Read at another busy fraction, the same steps are another state: the round's own counts.
    expect(roundStepScale(steps, fit, "coupled", 0.9)).to.be.closeTo((1.2 * 740) / 900, 1e-9);
    // A mode the fit has no steps of is the fit's state.
    expect(roundStepScale(steps, fit, "hybrid", 0.94)).to.equal(1);
  });

  it("scales the simulated steps and hops of a round, and the fit's state changes nothing", () => {
    const fit = run(measured);
    expect(run(withRoundState(measured, FIT_STATE))).to.deep.equal(fit);
    const slowSteps = run(withRoundState(measured, { ...FIT_STATE, stepScale: 1.5 }));
    // No stream end and a lone sequence most of the time: the TPOT is the step period's.
    expect(slowSteps.tpotMs.mean / fit.tpotMs.mean).to.be.closeTo(1.5, 0.1);
    const slowHops = run(withRoundState(measured, { ...FIT_STATE, hopScale: 2 }));
    expect(slowHops.ttftMs.p50).to.be.greaterThan(1.6 * fit.ttftMs.p50);
    // A wider tail moves the P95 and leaves the median (z = 0) where it was.
    const wideTail = run(withRoundState(measured, { ...FIT_STATE, hopTailScale: 1.5 }));
    expect(wideTail.ttftMs.p95).to.be.greaterThan(1.2 * fit.ttftMs.p95);
    expect(wideTail.ttftMs.p50).to.be.closeTo(fit.ttftMs.p50, 0.1 * fit.ttftMs.p50);
  });

  it("recovers the hop scale of a round from its TTFT quantile", () => {
    for (const truth of [0.7, 1.6]) {
      const round = run(withRoundState(measured, { ...FIT_STATE, hopScale: truth }), 3).ttftsMs ?? [];
      const fitted = fitRoundScale(
        round,
        80,
        (x) => run(withRoundState(measured, { ...FIT_STATE, hopScale: x }), 3).ttftsMs ?? [],
      );
      expect(fitted).to.be.closeTo(truth, 0.05 * truth);
    }
    // No requests kept: the fit's state.
    expect(fitRoundScale([], 80, () => [1])).to.equal(1);
  });

  it("pools the rounds' requests as the measurement does", () => {
    const rounds: StateRound[] = [
      { ttftsMs: [10, 11, 12, 13], tpotMeanMs: 1, completed: 4, throughputTokensPerSecond: 100 },
      { ttftsMs: [40, 41], tpotMeanMs: 4, completed: 2, throughputTokensPerSecond: 90 },
      { ttftsMs: [20, 21, 22, 23], tpotMeanMs: 2, completed: 4, throughputTokensPerSecond: 95 },
    ];
    let i = 0;
    const pooled = pooledOverStates([FIT_STATE, FIT_STATE, FIT_STATE], () => rounds[i++] as StateRound);
    const all = rounds.flatMap((r) => r.ttftsMs).sort((a, b) => a - b);
    expect(pooled.ttftMs.p95).to.equal(percentile(all, 95));
    expect(pooled.ttftMs.p50).to.equal(percentile(all, 50));
    // The mean TPOT over every request: (4 × 1 + 2 × 4 + 4 × 2) / 10.
    expect(pooled.tpotMs.mean).to.be.closeTo(2, 1e-12);
    expect(pooled.throughputTokensPerSecond).to.equal(95);
    expect(() => pooledOverStates([], () => rounds[0] as StateRound)).to.throw(RangeError);
  });

  it("puts one slow round into the pooled P95 and is deterministic", () => {
    const even = pooledOverStates([FIT_STATE, FIT_STATE, FIT_STATE], (s) => roundOf(measured, s));
    const states: RoundState[] = [FIT_STATE, FIT_STATE, { ...FIT_STATE, hopScale: 1.5 }];
    const oneSlow = pooledOverStates(states, (s) => roundOf(measured, s));
    // The P95 of three rounds with one slow takes that round's tail: it rises by more than the
    // mean round's hops do (a sixth), the median by less.
    expect(oneSlow.ttftMs.p95 / even.ttftMs.p95).to.be.greaterThan(1.2);
    expect(oneSlow.ttftMs.p50 / even.ttftMs.p50).to.be.lessThan(1.2);
    expect(pooledOverStates(states, (s) => roundOf(measured, s))).to.deep.equal(oneSlow);
  });
});
