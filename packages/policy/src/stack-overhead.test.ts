import { expect } from "chai";
import { validationCluster } from "./test-support";
import { CostModel, DEFAULT_CALIBRATION, type Calibration } from "./cost-model";
import { policyByName } from "./placement";
import { logNormalAt } from "./sim-cost";
import { simulate } from "./simulator";
import { smallestMeeting } from "./smallest-meeting";
import { DEFAULT_WORKLOAD, type WorkloadSpec } from "./workload";

const NO_SLO = { ttftMs: 1e9, tpotMs: 1e9 };
const cluster = validationCluster;
const workload = (rate: number): WorkloadSpec => ({
  ...DEFAULT_WORKLOAD,
  adapters: 12,
  ranks: [4, 8, 16, 32, 64],
  rate,
  duration: 20,
  promptMedian: 24,
  outputMedian: 16,
  lengthSigma: 0.4,
  seed: 1,
});
const run = (rate: number, over: Partial<Calibration>) =>
  simulate(
    workload(rate),
    cluster,
    policyByName("rank-aware"),
    new CostModel({ ...DEFAULT_CALIBRATION, stepOverheadUs: 2000, ...over }),
    NO_SLO,
  );

describe("the serving stack's overheads in the CPU-calibrated simulator", () => {
  it("draws each request's overhead from a log-normal with the measured median and P95", () => {
    expect(logNormalAt(10_000, 30_000, 0)).to.equal(10_000);
    expect(logNormalAt(10_000, 30_000, 1.6449)).to.be.closeTo(30_000, 1);
    expect(logNormalAt(10_000, undefined, 2)).to.equal(10_000);
    expect(logNormalAt(0, 30_000, 2)).to.equal(0);
  });

  it("a long-tailed request overhead moves TTFT's P95 far more than its median, and stays deterministic", () => {
    const constant = run(1, { requestOverheadUs: 10_000 });
    const tailed = run(1, { requestOverheadUs: 10_000, requestOverheadP95Us: 30_000 });
    expect(JSON.stringify(tailed)).to.equal(
      JSON.stringify(run(1, { requestOverheadUs: 10_000, requestOverheadP95Us: 30_000 })),
    );
    // Same requests either way: the overheads come from a stream of their own.
    expect(tailed.completed).to.equal(constant.completed);
    expect(Math.abs(tailed.ttftMs.p50 - constant.ttftMs.p50)).to.be.below(3);
    expect(tailed.ttftMs.p95 - constant.ttftMs.p95).to.be.above(12);
    expect(tailed.tpotMs.mean).to.be.closeTo(constant.tpotMs.mean, 1e-9);
  });

  it("disaggregated requests use their own overhead when one was measured", () => {
    const over = { requestOverheadUs: 5_000, remoteRequestOverheadUs: 25_000 };
    const c = new CostModel({ ...DEFAULT_CALIBRATION, ...over });
    const d = simulate(workload(1), { ...cluster, mode: "disaggregated" }, policyByName("rank-aware"), c, NO_SLO);
    const d0 = simulate(
      workload(1),
      { ...cluster, mode: "disaggregated" },
      policyByName("rank-aware"),
      new CostModel({ ...DEFAULT_CALIBRATION, requestOverheadUs: 5_000 }),
      NO_SLO,
    );
    expect(d.ttftMs.p50 - d0.ttftMs.p50).to.be.closeTo(20, 2);
  });

  it("streaming a token per sequence makes a step's cost grow with the sequences in it", () => {
    const quiet = (over: Partial<Calibration>) => run(1, over).tpotMs.mean;
    const busy = (over: Partial<Calibration>) => run(16, over).tpotMs.mean;
    // Without it, batching is nearly free on this calibration; with it, TPOT rises with the rate.
    const without = busy({}) - quiet({});
    const withStream = busy({ tokenStreamUs: 1000 }) - quiet({ tokenStreamUs: 1000 });
    expect(withStream).to.be.above(without + 0.5);
    expect(quiet({ tokenStreamUs: 1000 }) - quiet({})).to.be.closeTo(1, 0.3);
  });
});

describe("smallestMeeting", () => {
  it("finds the threshold of a monotone predicate by bisection, visiting few counts", () => {
    for (const threshold of [1, 2, 17, 53, 64]) {
      const visited: number[] = [];
      const found = smallestMeeting((k) => {
        visited.push(k);
        return k >= threshold;
      }, 64);
      expect(found).to.equal(threshold);
      expect(visited.length).to.be.at.most(8);
    }
    expect(smallestMeeting(() => false, 64)).to.equal(Infinity);
    expect(smallestMeeting((k) => k >= 3, 256, 2)).to.equal(3);
    expect(smallestMeeting(() => true, 256, 2)).to.equal(2);
  });

  it("rejects a bad range with a typed error", () => {
    expect(() => smallestMeeting(() => true, 0)).to.throw(RangeError);
    expect(() => smallestMeeting(() => true, 4, 5)).to.throw(RangeError);
    expect(() => smallestMeeting(() => true, 2.5)).to.throw(RangeError);
  });
});
