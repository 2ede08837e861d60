import { expect } from "chai";
import { CostModel, DEFAULT_CALIBRATION, type Calibration } from "./cost-model";
import { policyByName } from "./placement";
import { fitStallSeconds, rebalancePauses, stallEndS, stallExcessMs, type TimedRequests } from "./rebalance-stall";
import { simulate } from "./simulator";
import { bareCalibration } from "./stack-fit";
import { validationCluster } from "./test-support";
import { DEFAULT_WORKLOAD } from "./workload";

/** Fixed hybrid step periods and shared log-normal hops (12 ms median, 30 ms P95). */
const k: Calibration = {
  ...bareCalibration(DEFAULT_CALIBRATION),
  stepPeriods: { fixedUs: { coupled: 2600, disaggregated: 5200, hybrid: 3500 }, steps: {} },
  streamEndUs: 0,
  requestOverheadUs: 12_000,
  requestOverheadP95Us: 30_000,
  remoteRequestOverheadUs: 12_000,
  remoteRequestOverheadP95Us: 30_000,
};

/** One simulated hybrid round (rebalancing policy, 6 req/s, 32 s) with the given pauses. */
const round = (seed: number, pauses: Array<{ at: number; seconds: number }>): TimedRequests => {
  const r = simulate(
    {
      ...DEFAULT_WORKLOAD,
      adapters: 12,
      ranks: [4, 8, 16, 32, 64],
      rate: 6,
      duration: 32,
      promptMedian: 24,
      outputMedian: 16,
      lengthSigma: 0.4,
      seed,
    },
    { ...validationCluster, mode: "hybrid", keepTtfts: true, pauses },
    policyByName("rank-aware+rebalancing"),
    new CostModel(k),
    { ttftMs: 1e9, tpotMs: 1e9 },
  );
  return { arrivalsS: r.arrivalsS ?? [], ttftsMs: r.ttftsMs ?? [] };
};

describe("the rebalance stall (m15t)", () => {
  it("delays the requests that arrive in a pause to its end, and no others", () => {
    const free = round(2, []);
    const paused = round(2, [{ at: 29.5, seconds: 0.5 }]);
    const byArrival = (r: TimedRequests): Map<number, number> =>
      new Map(r.arrivalsS.map((a, i) => [a, r.ttftsMs[i] as number]));
    const before = byArrival(free);
    const after = byArrival(paused);
    let inside = 0;
    for (const [a, t] of after) {
      const t0 = before.get(a) as number;
      if (a >= 29.5 && a < 30) {
        inside++;
        // Its first token cannot come before the pause's end.
        expect(a + t / 1000).to.be.at.least(30);
      } else if (a < 29.4 || a > 30.3) expect(t).to.be.closeTo(t0, 1e-6);
    }
    expect(inside).to.be.greaterThan(0);
  });

  it("finds where a round's stall ends and the excess of the requests before it", () => {
    const r: TimedRequests = {
      arrivalsS: [1, 2, 3, 29.5, 29.8, 29.9, 31],
      ttftsMs: [20, 20, 20, 22, 220, 120, 20],
    };
    expect(stallEndS(r, 25, 32)).to.be.closeTo(30, 1e-9);
    expect(stallEndS(r, 0, 0.5)).to.equal(undefined);
    // Median 20 ms; the three requests in [29, 30): 2, 200 and 100 ms above it.
    expect(stallExcessMs([{ ...r, endS: 30 }])).to.be.closeTo(302 / 3, 1e-9);
  });

  it("fits back a stall it simulated, from the rounds' excess (deterministic)", () => {
    for (const seconds of [0.15, 0.35]) {
      const measured = [2, 3, 4].map((seed) => {
        const r = round(seed, [{ at: 30 - seconds, seconds }]);
        return { ...r, endS: stallEndS(r, 25, 32) as number };
      });
      const excess = stallExcessMs(measured);
      const sim = (d: number): number =>
        stallExcessMs(
          measured.map((m, i) => ({ ...round(i + 2, d > 0 ? [{ at: m.endS - d, seconds: d }] : []), endS: m.endS })),
        );
      const fitted = fitStallSeconds(excess, sim);
      expect(fitted).to.be.closeTo(seconds, 0.25 * seconds);
      expect(fitStallSeconds(excess, sim)).to.equal(fitted);
    }
  });

  it("fits no stall where the rounds show none", () => {
    const measured = [2, 3, 4].map((seed) => {
      const r = round(seed, []);
      return { ...r, endS: stallEndS(r, 25, 32) as number };
    });
    const sim = (d: number): number =>
      stallExcessMs(
        measured.map((m, i) => ({ ...round(i + 2, d > 0 ? [{ at: m.endS - d, seconds: d }] : []), endS: m.endS })),
      );
    expect(fitStallSeconds(stallExcessMs(measured), sim)).to.be.below(0.02);
  });

  it("repeats the pause every interval within the run", () => {
    expect(rebalancePauses(30, 0.3, 30, 40)).to.deep.equal([{ at: 29.7, seconds: 0.3 }]);
    expect(rebalancePauses(30, 0.3, 30, 70).map((p) => Math.round(p.at * 10) / 10)).to.deep.equal([29.7, 59.7]);
    expect(rebalancePauses(30, 0, 30, 40)).to.deep.equal([]);
  });
});
