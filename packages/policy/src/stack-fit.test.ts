import { expect } from "chai";
import { validationCluster } from "./test-support";
import { CostModel, DEFAULT_CALIBRATION, type Calibration } from "./cost-model";
import { policyByName } from "./placement";
import { normalQuantile, SeededRandom, stratifiedNormals } from "./random";
import { hopIdleUs } from "./sim-cost";
import { simulate } from "./simulator";
import {
  bareCalibration,
  fitRequestOverheads,
  fitStackOverheads,
  hopBusySlope,
  hybridBusyHopSteps,
  medianOverRounds,
  pooledOverRounds,
  TAIL_QUANTILE,
  type ProbeSpec,
  type ProbeSummary,
} from "./stack-fit";
import { DEFAULT_WORKLOAD } from "./workload";

const cluster = validationCluster;

// One seeded simulation of a probe's workload; `keepTtfts` also returns its requests' TTFTs.
const runSeed = (p: ProbeSpec, k: Calibration, seed: number, keepTtfts: boolean) =>
  simulate(
    {
      ...DEFAULT_WORKLOAD,
      adapters: 12,
      ranks: [4, 8, 16, 32, 64],
      rate: p.rate,
      duration: 20,
      promptMedian: 24,
      outputMedian: 16,
      lengthSigma: 0.4,
      seed,
    },
    { ...cluster, mode: p.mode, keepTtfts },
    policyByName("rank-aware"),
    new CostModel(k),
    { ttftMs: 1e9, tpotMs: 1e9 },
  );
const summaryOf = (r: ReturnType<typeof simulate>): ProbeSummary => ({
  ttftP50Ms: r.ttftMs.p50,
  ttftP95Ms: r.ttftMs.p95,
  tpotMeanMs: r.tpotMs.mean,
});
const simulateSeed = (p: ProbeSpec, k: Calibration, seed: number): ProbeSummary =>
  summaryOf(runSeed(p, k, seed, false));
const simulateProbe = (p: ProbeSpec, k: Calibration): ProbeSummary => simulateSeed(p, k, 2);

const specs = {
  coupledLow: { mode: "coupled", rate: 2 },
  coupledHigh: { mode: "coupled", rate: 10 },
  disaggregated: { mode: "disaggregated", rate: 2 },
  hybrid: { mode: "hybrid", rate: 2 },
} as const;

/** Probes "measured" on a simulated mesh with known overheads. */
function probesOf(truth: Calibration) {
  const at = (p: ProbeSpec) => ({ ...p, ...simulateProbe(p, truth) });
  return {
    coupledLow: at(specs.coupledLow),
    coupledHigh: at(specs.coupledHigh),
    disaggregated: at(specs.disaggregated),
    hybrid: at(specs.hybrid),
  };
}

/** A calibration with only the worker's fixed step periods measured. */
function fixedStepsOnly(): Calibration {
  return {
    ...bareCalibration(DEFAULT_CALIBRATION),
    stepPeriods: { fixedUs: { coupled: 2600, disaggregated: 5200, hybrid: 8000 }, steps: {} },
  };
}

/** `measured` on a mesh whose hops are the same in every mode: 12 ms median, 30 ms P95. */
function withSharedHops(measured: Calibration): Calibration {
  return {
    ...measured,
    streamEndUs: 3000,
    requestOverheadUs: 12_000,
    requestOverheadP95Us: 30_000,
    remoteRequestOverheadUs: 12_000,
    remoteRequestOverheadP95Us: 30_000,
  };
}

describe("fitting the serving stack's overheads to probes", () => {
  const truth: Calibration = {
    ...bareCalibration(DEFAULT_CALIBRATION),
    stepOverheadUs: 900,
    tokenStreamUs: 300,
    remoteStepOverheadUs: 900 + 6000,
    hybridStepOverheadUs: 2500,
    requestOverheadUs: 12_000,
    requestOverheadP95Us: 30_000,
    remoteRequestOverheadUs: 20_000,
    remoteRequestOverheadP95Us: 45_000,
  };

  it("recovers the per-step, per-sequence and remote-step overheads of a mesh the simulator knows", () => {
    const fitted = fitStackOverheads(probesOf(truth), DEFAULT_CALIBRATION, simulateProbe);
    expect(fitted.stepOverheadUs).to.be.closeTo(900, 90);
    expect(fitted.tokenStreamUs).to.be.closeTo(300, 60);
    expect(fitted.remoteStepOverheadUs).to.be.closeTo(6900, 350);
    expect(fitted.hybridStepOverheadUs).to.be.closeTo(2500, 250);
    // The tail is fitted on its own: the log-normal's median and P95 both come back.
    expect(fitted.requestOverheadUs).to.be.closeTo(12_000, 2_000);
    expect(fitted.requestOverheadP95Us).to.be.closeTo(30_000, 6_000);
    expect(fitted.remoteRequestOverheadUs).to.be.closeTo(20_000, 3_000);
    expect(fitted.remoteRequestOverheadP95Us).to.be.closeTo(45_000, 9_000);
    // The calibration's gRPC-echo transport cost is replaced by the measured ring round trip.
    expect(fitted.transport.shm.fixedUs).to.equal(0);
  });

  it("predicts the probes it was fitted on and is deterministic", () => {
    const probes = probesOf(truth);
    const fitted = fitStackOverheads(probes, DEFAULT_CALIBRATION, simulateProbe);
    expect(JSON.stringify(fitStackOverheads(probes, DEFAULT_CALIBRATION, simulateProbe))).to.equal(
      JSON.stringify(fitted),
    );
    for (const key of ["coupledLow", "coupledHigh", "disaggregated", "hybrid"] as const) {
      const p = simulateProbe(specs[key], fitted);
      expect(p.tpotMeanMs).to.be.closeTo(probes[key].tpotMeanMs, probes[key].tpotMeanMs * 0.05);
    }
    for (const key of ["coupledLow", "disaggregated"] as const) {
      const p = simulateProbe(specs[key], fitted);
      expect(p.ttftP50Ms).to.be.closeTo(probes[key].ttftP50Ms, probes[key].ttftP50Ms * 0.05);
      expect(p.ttftP95Ms).to.be.closeTo(probes[key].ttftP95Ms, probes[key].ttftP95Ms * 0.05);
    }
  });

  it("never fits a negative overhead when the kernel model alone is already too slow", () => {
    const probes = probesOf(truth);
    const fast = (p: ProbeSpec & ProbeSummary) => ({ ...p, tpotMeanMs: 0.1, ttftP50Ms: 0.1, ttftP95Ms: 0.2 });
    const fitted = fitStackOverheads(
      {
        coupledLow: fast(probes.coupledLow),
        coupledHigh: fast(probes.coupledHigh),
        disaggregated: fast(probes.disaggregated),
        hybrid: fast(probes.hybrid),
      },
      DEFAULT_CALIBRATION,
      simulateProbe,
    );
    for (const v of [
      fitted.stepOverheadUs,
      fitted.tokenStreamUs,
      fitted.remoteStepOverheadUs,
      fitted.requestOverheadUs,
      fitted.requestOverheadP95Us,
      fitted.remoteRequestOverheadUs,
      fitted.hybridStepOverheadUs,
    ])
      expect(v).to.be.at.least(0);
  });

  it("with the worker's measured step periods, recovers the stream's end and the request hops", () => {
    const measured: Calibration = {
      ...bareCalibration(DEFAULT_CALIBRATION),
      stepPeriods: {
        fixedUs: { coupled: 2600, disaggregated: 5200, hybrid: 8000 },
        perSequenceUs: 150,
        perPrefillTokenUs: 40,
        perFinishUs: 700,
        steps: {},
      },
    };
    const withTruth: Calibration = {
      ...measured,
      streamEndUs: 3000,
      requestOverheadUs: 12_000,
      requestOverheadP95Us: 30_000,
      remoteRequestOverheadUs: 20_000,
      remoteRequestOverheadP95Us: 45_000,
    };
    const probes = probesOf(withTruth);
    const fitted = fitRequestOverheads(probes, measured, simulateProbe);
    expect(fitted.streamEndUs).to.be.closeTo(3000, 150);
    expect(fitted.requestOverheadUs).to.be.closeTo(12_000, 2_000);
    expect(fitted.requestOverheadP95Us).to.be.closeTo(30_000, 6_000);
    expect(fitted.remoteRequestOverheadUs).to.be.closeTo(20_000, 3_000);
    expect(fitted.stepPeriods).to.deep.equal(measured.stepPeriods);
    expect(() => fitRequestOverheads(probes, DEFAULT_CALIBRATION, simulateProbe)).to.throw(RangeError, /stepPeriods/);
    // Shared hops: one log-normal for every mode, fitted on both low-rate probes together. On a mesh
    // whose hops are the same in both modes it recovers them; on this one it lands between the two.
    const same = probesOf({ ...withTruth, remoteRequestOverheadUs: 12_000, remoteRequestOverheadP95Us: 30_000 });
    const shared = fitRequestOverheads(same, measured, simulateProbe, { sharedHops: true });
    expect(shared.requestOverheadUs).to.be.closeTo(12_000, 2_000);
    expect(shared.requestOverheadP95Us).to.be.closeTo(30_000, 6_000);
    expect(shared.remoteRequestOverheadUs).to.equal(shared.requestOverheadUs);
    expect(shared.remoteRequestOverheadP95Us).to.equal(shared.requestOverheadP95Us);
    const between = fitRequestOverheads(probes, measured, simulateProbe, { sharedHops: true });
    expect(between.requestOverheadUs).to.be.within(12_000, 20_000);
    expect(between.remoteRequestOverheadUs).to.equal(between.requestOverheadUs);
  });

  it("ends a disaggregated step priced by its measured period with that period, whatever the kernel calibration prices the LoRA server's lane at", () => {
    // The worker's measured period holds its round trips to the LoRA server and the server's work;
    // a lane priced by `loramesh calibrate`'s LoRA line (12 sites × its intercept) must not end the
    // step later. 12 × 200 µs = 2.4 ms of lane against a 900-µs period.
    const measured: Calibration = withSharedHops({
      ...bareCalibration(DEFAULT_CALIBRATION),
      stepPeriods: {
        fixedUs: { coupled: 700, disaggregated: 900, hybrid: 3600 },
        perSequenceUs: 150,
        perPrefillTokenUs: 40,
        perFinishUs: 300,
        steps: {},
      },
    });
    const run = (loraFixedUs: number, executors: number, rate: number) =>
      simulate(
        {
          ...DEFAULT_WORKLOAD,
          adapters: 12,
          ranks: [4, 8, 16, 32, 64],
          rate,
          duration: 20,
          promptMedian: 24,
          outputMedian: 16,
          lengthSigma: 0.4,
          seed: 1,
        },
        { ...cluster, mode: "disaggregated", executors },
        policyByName("rank-aware"),
        new CostModel({ ...measured, loraFixedUs }),
        { ttftMs: 1e9, tpotMs: 1e9 },
      );
    const cheap = run(24, 1, 4);
    const dear = run(200, 1, 4);
    expect(dear.tpotMs.mean).to.equal(cheap.tpotMs.mean);
    expect(dear.ttftMs.p95).to.equal(cheap.ttftMs.p95);
    // A lone decode step is 0.9 ms; with the stream's end spread over ~15 tokens, under 1.3 ms.
    expect(dear.tpotMs.mean).to.be.within(0.9, 1.3);
    // Executors sharing one server still queue behind each other's lanes: four busy workers wait
    // longer for a dear server than for a cheap one.
    expect(run(200, 4, 160).tpotMs.mean).to.be.above(run(24, 4, 160).tpotMs.mean * 1.1);
  });

  it("predicts a probe whose rounds ran several seeds as the median of the rounds' simulations", () => {
    const measured = fixedStepsOnly();
    const withTruth = withSharedHops(measured);
    const seeds = [2, 3, 4];
    const calls: number[] = [];
    const each = seeds.map((seed) => simulateSeed(specs.coupledLow, withTruth, seed));
    const m = medianOverRounds([...seeds, 3], (seed) => {
      calls.push(seed);
      return simulateSeed(specs.coupledLow, withTruth, seed);
    });
    // Each distinct seed once; each figure the median of the rounds' (the fourth round repeats seed 3).
    expect(calls).to.deep.equal([2, 3, 4]);
    const mid = (v: number[]): number => {
      const s = [...v].sort((a, b) => a - b);
      return ((s[1] as number) + (s[2] as number)) / 2;
    };
    expect(m.ttftP95Ms).to.equal(mid([...each.map((e) => e.ttftP95Ms), each[1]!.ttftP95Ms]));
    expect(m.tpotMeanMs).to.equal(mid([...each.map((e) => e.tpotMeanMs), each[1]!.tpotMeanMs]));
    expect(() => medianOverRounds([], () => each[0]!)).to.throw(RangeError);
    // Probes "measured" as the median of rounds of seeds 2, 3 and 4 on a mesh with known hops: fitted
    // with the same estimator, the hops come back; fitted as if every round ran seed 2, they need not.
    const at = (p: ProbeSpec) => ({ ...p, ...medianOverRounds(seeds, (seed) => simulateSeed(p, withTruth, seed)) });
    const probes = {
      coupledLow: at(specs.coupledLow),
      coupledHigh: at(specs.coupledHigh),
      disaggregated: at(specs.disaggregated),
      hybrid: at(specs.hybrid),
    };
    const byRounds = (p: ProbeSpec, k: Calibration) => medianOverRounds(seeds, (seed) => simulateSeed(p, k, seed));
    const fitted = fitRequestOverheads(probes, measured, byRounds, { sharedHops: true });
    expect(fitted.streamEndUs).to.be.closeTo(3000, 150);
    expect(fitted.requestOverheadUs).to.be.closeTo(12_000, 1_500);
    expect(fitted.requestOverheadP95Us).to.be.closeTo(30_000, 4_500);
  });

  // Each round's simulated requests, with their TTFTs (`keepTtfts`), from one simulation.
  const roundOf = (p: ProbeSpec, k: Calibration, seed: number): ProbeSummary & { ttftsMs: number[] } => {
    const r = runSeed(p, k, seed, true);
    return { ...summaryOf(r), ttftsMs: r.ttftsMs ?? [] };
  };

  it("fits the hops' tail on the probe rounds' requests pooled, simulated the same way", () => {
    const measured = fixedStepsOnly();
    const withTruth = withSharedHops(measured);
    const seeds = [2, 3, 4];
    const calls: number[] = [];
    const rounds = seeds.map((seed) => roundOf(specs.coupledLow, withTruth, seed));
    const pooled = pooledOverRounds([...seeds, 3], (seed) => {
      calls.push(seed);
      return rounds[seeds.indexOf(seed)] as ProbeSummary & { ttftsMs: number[] };
    });
    // Each distinct seed simulated once, a repeated round's requests counted twice.
    expect(calls).to.deep.equal([2, 3, 4]);
    const all = [...rounds.flatMap((r) => r.ttftsMs), ...(rounds[1]?.ttftsMs ?? [])].sort((a, b) => a - b);
    expect(all.length).to.be.above(100);
    expect(pooled.ttftP95Ms).to.equal(all[Math.floor(0.95 * all.length)]);
    expect(pooled.ttftP50Ms).to.equal(all[Math.floor(0.5 * all.length)]);
    // The mean TPOT stays the median of the rounds'.
    const tpots = [...rounds.map((r) => r.tpotMeanMs), rounds[1]!.tpotMeanMs].sort((a, b) => a - b);
    expect(pooled.tpotMeanMs).to.equal((tpots[1]! + tpots[2]!) / 2);
    expect(() => pooledOverRounds([], () => rounds[0]!)).to.throw(RangeError);
    // Without `keepTtfts` a simulation returns no requests (the CLI's reports stay small).
    expect(simulateSeed(specs.coupledLow, withTruth, 2)).to.not.have.property("ttftsMs");
    // Probes "measured" pooled on a mesh with known hops, fitted with the same estimator: the hops
    // come back, on the three probes the harness fits them on since m15l.
    const byPool = (p: ProbeSpec, k: Calibration) => pooledOverRounds(seeds, (seed) => roundOf(p, k, seed));
    const at = (p: ProbeSpec) => ({ ...p, ...byPool(p, withTruth) });
    const probes = {
      coupledLow: at(specs.coupledLow),
      coupledHigh: at(specs.coupledHigh),
      disaggregated: at(specs.disaggregated),
      hybrid: at(specs.hybrid),
    };
    const fitted = fitRequestOverheads(probes, measured, byPool, {
      sharedHops: ["coupledLow", "coupledHigh", "disaggregated"],
    });
    expect(fitted.requestOverheadUs).to.be.closeTo(12_000, 1_500);
    expect(fitted.requestOverheadP95Us).to.be.closeTo(30_000, 4_500);
  });

  it("fits the hops' log-normal tail on the pooled requests' P80, and the model's own distribution gives the P95", () => {
    const measured = fixedStepsOnly();
    const withTruth = withSharedHops(measured);
    const seeds = [2, 3, 4];
    // The pool's P80 is reported as the tail's figure, only when a quantile is asked for.
    const rounds = seeds.map((seed) => roundOf(specs.coupledLow, withTruth, seed));
    const all = rounds.flatMap((r) => r.ttftsMs).sort((a, b) => a - b);
    const pooled = pooledOverRounds(seeds, (seed) => rounds[seeds.indexOf(seed)]!, TAIL_QUANTILE);
    expect(TAIL_QUANTILE).to.equal(80);
    expect(pooled.ttftTailMs).to.equal(all[Math.floor(0.8 * all.length)]);
    expect(pooled.ttftP95Ms).to.equal(all[Math.floor(0.95 * all.length)]);
    expect(pooledOverRounds(seeds, (seed) => rounds[seeds.indexOf(seed)]!)).to.not.have.property("ttftTailMs");
    // The median of the rounds carries the tail's figure only where every round has one.
    const med = medianOverRounds(seeds, (seed) => ({ ...rounds[seeds.indexOf(seed)]!, ttftTailMs: seed }));
    expect(med.ttftTailMs).to.equal(3);
    // Probes measured on a mesh with known hops (12 ms median, 30 ms P95): fitted on the P80 the
    // hops come back, and the fit moves with the P80, not with the requests above it.
    const byPool = (p: ProbeSpec, k: Calibration) =>
      pooledOverRounds(seeds, (seed) => roundOf(p, k, seed), TAIL_QUANTILE);
    const at = (p: ProbeSpec) => ({ ...p, ...byPool(p, withTruth) });
    const probes = {
      coupledLow: at(specs.coupledLow),
      coupledHigh: at(specs.coupledHigh),
      disaggregated: at(specs.disaggregated),
      hybrid: at(specs.hybrid),
    };
    const hops = ["coupledLow", "coupledHigh", "disaggregated"] as const;
    const fitted = fitRequestOverheads(probes, measured, byPool, { sharedHops: hops });
    expect(fitted.requestOverheadUs).to.be.closeTo(12_000, 1_500);
    expect(fitted.requestOverheadP95Us).to.be.closeTo(30_000, 4_500);
    // A few stalled requests above every probe's P80 (its P95 raised by half) leave the fit as it
    // was; fitted on the P95 (the tail's figure dropped), the same probes raise the tail.
    const stalled = Object.fromEntries(
      Object.entries(probes).map(([k, p]) => [k, { ...p, ttftP95Ms: p.ttftP95Ms * 1.5 }]),
    ) as typeof probes;
    const again = fitRequestOverheads(stalled, measured, byPool, { sharedHops: hops });
    expect(again.requestOverheadP95Us).to.equal(fitted.requestOverheadP95Us);
    const noTail = (p: (typeof probes)["coupledLow"]) => ({ ...p, ttftTailMs: undefined });
    const onP95 = Object.fromEntries(Object.entries(stalled).map(([k, p]) => [k, noTail(p)])) as typeof probes;
    const byPoolP95 = (p: ProbeSpec, k: Calibration) => pooledOverRounds(seeds, (seed) => roundOf(p, k, seed));
    const raised = fitRequestOverheads(onP95, measured, byPoolP95, { sharedHops: hops });
    expect(raised.requestOverheadP95Us).to.be.above((fitted.requestOverheadP95Us ?? 0) * 1.3);
  });

  it("draws the request hops stratified, so a run's TTFT P95 is the fitted hops' whatever its seed", () => {
    // The draws are the normal's quantiles in a seeded order: the same values for every seed.
    const z = stratifiedNormals(80, new SeededRandom(7));
    const other = stratifiedNormals(80, new SeededRandom(8));
    expect(z).to.not.deep.equal(other);
    expect([...z].sort((a, b) => a - b)).to.deep.equal([...other].sort((a, b) => a - b));
    expect(normalQuantile(0.95)).to.be.closeTo(1.6449, 1e-4);
    expect(normalQuantile(0.5)).to.be.closeTo(0, 1e-9);
    expect(normalQuantile(0.001)).to.be.closeTo(-3.0902, 1e-4);
    // Hops of median 10 ms and P95 20 ms on a fast step: each seed's TTFT P95 is the hops' P95 plus
    // a step (19.9–20.6 ms here). With one free draw a request, 80 requests of seed 1 put the
    // draws' P95 at z = 1.94 and seed 4's at 1.46: TTFT P95s 22.6 and 18.6 ms, 20 % apart.
    const k: Calibration = {
      ...bareCalibration(DEFAULT_CALIBRATION),
      stepPeriods: { fixedUs: { coupled: 300 }, steps: {} },
      requestOverheadUs: 10_000,
      requestOverheadP95Us: 20_000,
    };
    const p95s = [1, 2, 3, 4].map((seed) => simulateSeed({ mode: "coupled", rate: 4 }, k, seed).ttftP95Ms);
    for (const p95 of p95s) expect(p95).to.be.within(19.5, 22);
    expect(Math.max(...p95s) / Math.min(...p95s)).to.be.below(1.06);
  });

  it("fits one hop distribution on the probes it is given", () => {
    const measured = fixedStepsOnly();
    const truth = withSharedHops(measured);
    const probes = probesOf(truth);
    const all = fitRequestOverheads(probes, measured, simulateProbe, {
      sharedHops: ["coupledLow", "coupledHigh", "disaggregated", "hybrid"],
    });
    expect(all.requestOverheadUs).to.be.closeTo(12_000, 1_500);
    expect(all.requestOverheadP95Us).to.be.closeTo(30_000, 4_500);
    expect(all.remoteRequestOverheadP95Us).to.equal(all.requestOverheadP95Us);
    // A probe whose tail ran long moves a fit on four probes less than one on two.
    const slow = { ...probes, coupledLow: { ...probes.coupledLow, ttftP95Ms: probes.coupledLow.ttftP95Ms * 1.4 } };
    const onTwo = fitRequestOverheads(slow, measured, simulateProbe, { sharedHops: true });
    const onFour = fitRequestOverheads(slow, measured, simulateProbe, {
      sharedHops: ["coupledLow", "coupledHigh", "disaggregated", "hybrid"],
    });
    expect(onFour.requestOverheadP95Us).to.be.below(onTwo.requestOverheadP95Us as number);
    expect(onFour.requestOverheadP95Us).to.be.above(30_000);
    expect(() => fitRequestOverheads(probes, measured, simulateProbe, { sharedHops: [] })).to.throw(RangeError);
  });

  it("fits the hops' busy term on two rates and prices each run's hops at its own busy fraction", () => {
    const measured = fixedStepsOnly();
    // A mesh whose hops cost 15 ms more per unit of idle fraction between idle 0.80 and 0.97
    // (busy 0.03–0.20), 12 ms at the median and 30 ms at P95 at idle 0.9.
    const term: Calibration = {
      ...withSharedHops(measured),
      requestOverheadIdleRef: 0.9,
      requestOverheadIdleRange: [0.8, 0.97],
    };
    const truth: Calibration = { ...term, requestOverheadPerIdleUs: 15_000 };
    // Priced at the idle fraction's distance from the reference, within the span fitted.
    expect(hopIdleUs(truth, 0.1)).to.equal(0);
    expect(hopIdleUs(truth, 0.05)).to.be.closeTo(750, 1e-6);
    expect(hopIdleUs(truth, 0.6)).to.be.closeTo(-1500, 1e-6);
    expect(hopIdleUs(truth, 0)).to.be.closeTo(1050, 1e-6);
    expect(hopIdleUs(truth, undefined)).to.equal(0);
    expect(hopIdleUs(term, 0.05)).to.equal(0);
    // A busier run's hops are cheaper: the 10 req/s probe's TTFT P50 falls against the 2 req/s
    // one's with the term, while without it queueing keeps it level or higher.
    const p50 = (k: Calibration, rate: number): number => simulateProbe({ mode: "coupled", rate }, k).ttftP50Ms;
    const without = p50(term, 2) - p50(term, 10);
    const withTerm = p50(truth, 2) - p50(truth, 10);
    expect(withTerm - without).to.be.above(1);
    // Fitted back: the probes at 2 and 10 req/s give the slope (their busy fractions set the span).
    const probes = probesOf(truth);
    const busy = {
      coupledLow: { ...probes.coupledLow, busyFraction: 0.03 },
      coupledHigh: { ...probes.coupledHigh, busyFraction: 0.2 },
      disaggregated: { ...probes.disaggregated, busyFraction: 0.05 },
      hybrid: { ...probes.hybrid, busyFraction: 0.12 },
    };
    expect(hopBusySlope(busy.coupledLow, busy.coupledHigh, term, simulateProbe)).to.be.closeTo(15_000, 3_000);
    const fitted = fitRequestOverheads(busy, measured, simulateProbe, {
      sharedHops: ["coupledLow", "coupledHigh", "disaggregated", "hybrid"],
      hopsByBusy: ["coupledLow", "coupledHigh"],
    });
    expect(fitted.requestOverheadIdleRange).to.deep.equal([0.8, 0.97]);
    expect(fitted.requestOverheadIdleRef).to.be.closeTo(0.9, 1e-9);
    expect(fitted.requestOverheadPerIdleUs).to.be.closeTo(15_000, 3_000);
    expect(fitted.requestOverheadUs).to.be.closeTo(12_000, 1_500);
    // No slope where the busier probe's P50 is not lower than queueing makes it: never negative.
    const flat = { ...busy.coupledHigh, ttftP50Ms: busy.coupledLow.ttftP50Ms + 2 };
    expect(hopBusySlope(busy.coupledLow, flat, term, simulateProbe)).to.equal(0);
    expect(() =>
      fitRequestOverheads(probes, measured, simulateProbe, {
        sharedHops: ["coupledLow", "coupledHigh"],
        hopsByBusy: ["coupledLow", "coupledHigh"],
      }),
    ).to.throw(RangeError, /busyFraction/);
  });

  it("prices each request's wake-up by the idle gap before it, and fits its slope on the two coupled rates", () => {
    const measured = fixedStepsOnly();
    // Hops of 10 ms (no tail) plus 8 ms per unit of wake fraction 1 − exp(−gap / 0.5 s).
    const base: Calibration = {
      ...measured,
      streamEndUs: 3000,
      requestOverheadUs: 10_000,
      requestOverheadP95Us: 10_000,
    };
    const wake: Calibration = {
      ...base,
      requestOverheadPerIdleUs: 8_000,
      requestOverheadIdleRef: 0,
      requestOverheadIdleRange: [0, 1],
      requestOverheadWakeTauS: 0.5,
    };
    const at = (k: Calibration, rate: number): ProbeSummary => simulateProbe({ mode: "coupled", rate }, k);
    // At 0.2 req/s nearly every gap is ≫ τ: every request pays nearly the whole 8 ms.
    expect(at(wake, 0.2).ttftP50Ms - at(base, 0.2).ttftP50Ms).to.be.within(7, 8);
    // At 12 req/s most gaps are short and a request sent during a step pays nothing: the run's
    // requests pay some of it, far less than at 0.2 req/s, though the term's slope is the same.
    const d12 = at(wake, 12).ttftP50Ms - at(base, 12).ttftP50Ms;
    expect(d12).to.be.within(0.3, 4);
    // Fitted back on the two coupled probes (no busy fractions needed): the slope and the hops.
    const probes = probesOf(wake);
    const fitted = fitRequestOverheads(probes, measured, simulateProbe, {
      sharedHops: ["coupledLow", "coupledHigh"],
      hopsByBusy: ["coupledLow", "coupledHigh"],
      hopWakeTauS: 0.5,
    });
    expect(fitted.requestOverheadWakeTauS).to.equal(0.5);
    expect(fitted.requestOverheadIdleRange).to.deep.equal([0, 1]);
    expect(fitted.requestOverheadPerIdleUs).to.be.closeTo(8_000, 2_000);
    expect(fitted.requestOverheadUs).to.be.closeTo(10_000, 1_500);
  });

  it("makes a hybrid request that reaches a stepping worker wait behind its step, fitted on the hybrid probe", () => {
    const measured = fixedStepsOnly();
    const term = withSharedHops(measured);
    // Hybrid steps of 8 ms: a request reaching a stepping worker queues 1.5 steps (12 ms) later.
    const truth: Calibration = { ...term, hybridBusyHopSteps: 1.5 };
    const at = (k: Calibration, mode: "coupled" | "hybrid", rate: number): ProbeSummary =>
      simulateProbe({ mode, rate }, k);
    // Priced on hybrid requests only, and more the busier the worker: at 8 req/s more of them
    // reach it stepping than at 2 req/s.
    expect(at(truth, "coupled", 8)).to.deep.equal(at(term, "coupled", 8));
    const rise = (rate: number): number => at(truth, "hybrid", rate).ttftP95Ms - at(term, "hybrid", rate).ttftP95Ms;
    expect(rise(8)).to.be.above(3);
    expect(rise(8)).to.be.above(rise(2));
    expect(at(truth, "hybrid", 2).ttftP50Ms - at(term, "hybrid", 2).ttftP50Ms).to.be.below(1);
    // Fitted back on a hybrid probe, the hops as they are: at 6 req/s, where enough of its requests
    // reach a stepping worker for its P95 to rest on them (at 2 req/s a 20-s probe has a handful).
    const busyHybrid = { mode: "hybrid", rate: 6 } as const;
    const probes = { ...probesOf(truth), hybrid: { ...busyHybrid, ...at(truth, "hybrid", 6) } };
    expect(hybridBusyHopSteps(probes.hybrid, term, simulateProbe)).to.be.closeTo(1.5, 0.3);
    const fitted = fitRequestOverheads(probes, measured, simulateProbe, {
      sharedHops: ["coupledLow", "coupledHigh", "disaggregated", "hybrid"],
      hybridBusyHops: "hybrid",
    });
    expect(fitted.hybridBusyHopSteps).to.be.closeTo(1.5, 0.3);
    expect(fitted.requestOverheadP95Us).to.be.closeTo(30_000, 4_500);
    // The hybrid probe left out of the hops (since m15l): the term is fitted once on top of them,
    // and the hops are those the other three probes give, whatever the hybrid probe measured.
    const three = ["coupledLow", "coupledHigh", "disaggregated"] as const;
    const apart = fitRequestOverheads(probes, measured, simulateProbe, { sharedHops: three, hybridBusyHops: "hybrid" });
    const hopsOnly = fitRequestOverheads(probes, measured, simulateProbe, { sharedHops: three });
    expect(apart.requestOverheadP95Us).to.equal(hopsOnly.requestOverheadP95Us);
    expect(apart.hybridBusyHopSteps).to.be.closeTo(1.5, 0.3);
    // A slow hybrid probe round (its P95 half as long again) moves neither the hops nor, past its
    // bound, the term.
    const slow = { ...probes, hybrid: { ...probes.hybrid, ttftP95Ms: probes.hybrid.ttftP95Ms * 1.5 } };
    const capped = fitRequestOverheads(slow, measured, simulateProbe, {
      sharedHops: three,
      hybridBusyHops: "hybrid",
      maxHybridBusyHopSteps: 2,
    });
    expect(capped.requestOverheadP95Us).to.equal(hopsOnly.requestOverheadP95Us);
    expect(capped.hybridBusyHopSteps).to.equal(2);
    // None where the shared hops already put the probe's P95 above the measured one.
    expect(hybridBusyHopSteps({ ...probes.hybrid, ttftP95Ms: 1 }, term, simulateProbe)).to.equal(0);
    expect(() => hybridBusyHopSteps(probes.coupledLow, term, simulateProbe)).to.throw(RangeError, /hybrid/);
  });
});
