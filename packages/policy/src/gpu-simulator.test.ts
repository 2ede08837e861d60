import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect } from "chai";
import { AdapterCache } from "./adapter-cache";
import { CostModel, DEFAULT_CALIBRATION, interpolate } from "./cost-model";
import { GPU_CLUSTER_DEFAULTS, gpuCluster, type GpuClusterOptions } from "./gpu-cluster";
import { H100_DERIVED } from "./gpu-cost-model";
import { adapterBytes, modelProfile, totalParams } from "./model-profiles";
import { policyByName } from "./placement";
import { serviceableRate, simulate } from "./simulator";
import { DEFAULT_WORKLOAD, type WorkloadSpec } from "./workload";

const NO_SLO = { ttftMs: 1e9, tpotMs: 1e9 };

function setup(over: Partial<GpuClusterOptions> = {}, profile = "mixtral-8x7b") {
  return gpuCluster({
    ...GPU_CLUSTER_DEFAULTS,
    profile: modelProfile(profile),
    calibration: H100_DERIVED,
    gpus: 16,
    mode: "coupled",
    ...over,
  });
}

function workload(bytesPerRank: number, over: Partial<WorkloadSpec> = {}): WorkloadSpec {
  return {
    ...DEFAULT_WORKLOAD,
    adapters: 128,
    ranks: [64],
    rate: 10,
    duration: 10,
    promptMedian: 256,
    outputMedian: 64,
    bytesPerRank,
    seed: 3,
    ...over,
  };
}

describe("model profiles and the derived GPU cost model", () => {
  it("computes adapter and weight bytes from the real shapes (expert LoRA included)", () => {
    // Mixtral-8x7B: 46.7 B parameters; a rank-64 adapter on attention and all 8 experts ≈ 1.92 GB.
    expect(totalParams(modelProfile("mixtral-8x7b")) / 1e9).to.be.closeTo(46.7, 0.3);
    expect(totalParams(modelProfile("llama-3-8b")) / 1e9).to.be.closeTo(8.03, 0.05);
    expect(adapterBytes(modelProfile("mixtral-8x7b"), 64) / 1e9).to.be.closeTo(1.92, 0.01);
    expect(adapterBytes(modelProfile("mixtral-8x7b"), 64, "attention")).to.be.lessThan(
      adapterBytes(modelProfile("mixtral-8x7b"), 64) / 10,
    );
  });

  it("ships the same calibration in bench/calibrations/h100-derived.json", () => {
    const file = join(__dirname, "..", "..", "..", "bench", "calibrations", "h100-derived.json");
    expect(JSON.parse(readFileSync(file, "utf8"))).to.deep.equal(H100_DERIVED);
  });

  it("prices padded kernels by the batch's largest rank and true-rank kernels by each adapter's", () => {
    const { cost } = setup();
    const mixed = {
      tokens: 64,
      attendedTokens: 0,
      adapters: [
        { tokens: 60, rank: 8 },
        { tokens: 4, rank: 128 },
      ],
    };
    const uniform = { ...mixed, adapters: [{ tokens: 64, rank: 8 }] };
    expect(cost.loraStepUs(mixed, "padded")).to.be.greaterThan(cost.loraStepUs(mixed, "true"));
    // Padding 60 rank-8 tokens to rank 128 costs more than the same batch at rank 8 alone.
    expect(cost.loraStepUs(uniform, "padded")).to.be.lessThan(cost.loraStepUs(mixed, "padded"));
    expect(cost.loraStepUs(mixed, "true") - cost.loraStepUs(uniform, "true")).to.be.lessThan(
      cost.loraStepUs(mixed, "padded") - cost.loraStepUs(uniform, "padded"),
    );
  });

  it("interpolates a CPU calibration's measured base steps instead of one straight line", () => {
    const points: Array<[number, number]> = [
      [1, 1500],
      [16, 5000],
      [256, 64000],
    ];
    expect(interpolate(points, 1)).to.equal(1500);
    expect(interpolate(points, 8)).to.be.closeTo(1500 + (3500 * 7) / 15, 1e-9);
    const cost = new CostModel({ ...DEFAULT_CALIBRATION, samples: { base: points } });
    expect(cost.baseStepUs(1)).to.equal(1500);
  });
});

describe("GPU cluster simulator", function () {
  this.timeout(120_000);

  it("is deterministic for a seed and changes with it", () => {
    const s = setup({ mode: "disaggregated" });
    const w = workload(s.bytesPerRank, { ranks: [8, 16, 32, 64, 128] });
    const a = simulate(w, s.cluster, policyByName("rank-aware"), s.cost, NO_SLO);
    const b = simulate(w, s.cluster, policyByName("rank-aware"), s.cost, NO_SLO);
    const c = simulate({ ...w, seed: 4 }, s.cluster, policyByName("rank-aware"), s.cost, NO_SLO);
    expect(JSON.stringify(a)).to.equal(JSON.stringify(b));
    expect(JSON.stringify(a)).to.not.equal(JSON.stringify(c));
    expect(a.completed).to.be.greaterThan(50);
  });

  it("memory: in a unified pool, KV growth evicts adapters, so long requests cause more cold loads", () => {
    const s = setup({ gpus: 2 });
    const run = (prompt: number, output: number) =>
      simulate(
        workload(s.bytesPerRank, { rate: 4, promptMedian: prompt, outputMedian: output, duration: 20 }),
        s.cluster,
        policyByName("rank-aware"),
        s.cost,
        NO_SLO,
      );
    const short = run(64, 16);
    const long = run(4096, 1024);
    expect(long.coldLoads).to.be.greaterThan(short.coldLoads);
  });

  it("memory: a unified pool gives way to KV; a cache that does not cannot exceed its share", () => {
    let kv = 0;
    const pool = 10;
    const cache = new AdapterCache(() => pool - kv);
    expect(cache.put("a", 4) && cache.put("b", 4)).to.equal(true);
    kv = 5;
    // The KV cache claims bytes: idle adapters leave; a pinned one stays.
    (cache.entries.get("b") as { pins: number }).pins = 1;
    expect(cache.shrinkTo(pool - kv)).to.equal(true);
    expect([...cache.entries.keys()]).to.deep.equal(["b"]);
    expect(cache.load("c", 4, 0, 1, 32)).to.equal(undefined);
  });

  it("LoRA servers queue work: their utilization and TPOT grow with the rate until the SLO breaks", () => {
    const s = setup({ mode: "disaggregated" });
    const w = workload(s.bytesPerRank, { ranks: [8, 16, 32, 64, 128], adapters: 256 });
    const at = (rate: number) => simulate({ ...w, rate }, s.cluster, policyByName("rank-aware"), s.cost, NO_SLO);
    const low = at(5);
    const high = at(320);
    expect(high.loraServerUtilization).to.be.greaterThan(low.loraServerUtilization as number);
    expect(high.loraServerUtilization).to.be.greaterThan(0.9);
    expect(high.tpotMs.mean).to.be.greaterThan(1.5 * low.tpotMs.mean);
    const slo = { ttftMs: 250, tpotMs: 100 };
    const rate = serviceableRate(w, s.cluster, () => policyByName("rank-aware"), s.cost, slo, 1, 1000, 6);
    expect(rate).to.be.greaterThan(1);
    expect(rate).to.be.lessThan(1000);
  });

  it("padded kernels slow a mixed-rank cluster down against true-rank kernels", () => {
    const w = (bytes: number) => workload(bytes, { ranks: [8, 16, 32, 64, 128], rate: 20 });
    const padded = setup({ kernel: "padded" }, "llama-3-8b");
    const trueRank = setup({ kernel: "true" }, "llama-3-8b");
    const p = simulate(w(padded.bytesPerRank), padded.cluster, policyByName("random"), padded.cost, NO_SLO);
    const t = simulate(w(trueRank.bytesPerRank), trueRank.cluster, policyByName("random"), trueRank.cost, NO_SLO);
    expect(p.tpotMs.mean).to.be.greaterThan(t.tpotMs.mean);
  });

  it("layer-wise loading shortens the TTFT of requests whose adapter is cold", () => {
    // Room for two adapters per instance and 64 popular-enough adapters: most requests load.
    const over = { gpus: 2, adapterShare: 0.06 } as const;
    const w = (bytes: number) => workload(bytes, { adapters: 64, zipf: 0, rate: 2, duration: 20 });
    const whole = setup({ ...over, layerwiseLoading: false });
    const layered = setup({ ...over, layerwiseLoading: true });
    const a = simulate(w(whole.bytesPerRank), whole.cluster, policyByName("rank-aware"), whole.cost, NO_SLO);
    const b = simulate(w(layered.bytesPerRank), layered.cluster, policyByName("rank-aware"), layered.cost, NO_SLO);
    expect(a.coldLoads).to.be.greaterThan(10);
    expect(b.ttftMs.p50).to.be.lessThan(a.ttftMs.p50);
  });
});
