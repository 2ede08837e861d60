import { expect } from "chai";
import { CostModel, DEFAULT_CALIBRATION } from "./cost-model";
import { imbalance, POLICY_NAMES, policyByName, type PolicyAdapter, type PolicyExecutor } from "./placement";
import { knapsack, knapsackBruteForce, planCapacity } from "./provisioning";
import { SeededRandom } from "./random";
import { simulate, type ClusterSpec } from "./simulator";
import { DEFAULT_WORKLOAD } from "./workload";

function instance(
  seed: number,
  n: number,
  executors: number,
  slack: number,
): { adapters: PolicyAdapter[]; executors: PolicyExecutor[] } {
  const rng = new SeededRandom(seed);
  const adapters = Array.from({ length: n }, (_, i) => {
    const rank = [8, 16, 32, 64, 128][rng.int(0, 5)] as number;
    return { id: `a${i}`, rank, sizeBytes: rank * 1000 + rng.int(0, 999), share: 1 / Math.pow(i + 1, 1.1) };
  });
  const total = adapters.reduce((s, a) => s + a.share, 0);
  for (const a of adapters) a.share /= total;
  const bytes = adapters.reduce((s, a) => s + a.sizeBytes, 0);
  // Enough room overall (with slack), split unevenly.
  const caps = Array.from({ length: executors }, (_, i) =>
    Math.ceil(((bytes * slack) / executors) * (0.7 + (0.6 * i) / Math.max(1, executors - 1))),
  );
  return { adapters, executors: caps.map((c, i) => ({ id: `e${i}`, capacityBytes: c })) };
}

describe("placement policies", () => {
  for (const name of POLICY_NAMES) {
    it(`${name}: never exceeds an executor's capacity and places every adapter when room allows`, () => {
      for (let seed = 1; seed <= 25; seed++) {
        const { adapters, executors } = instance(seed, 40 + seed, 2 + (seed % 6), 2.5);
        const policy = policyByName(name, seed);
        let current = new Map<string, readonly string[]>();
        // Place twice with changed traffic, as the provisioner and the simulator do.
        for (let round = 0; round < 2; round++) {
          const shifted = adapters.map((a, i) => ({
            ...a,
            share: round === 0 ? a.share : (adapters[(i + 7) % adapters.length] as PolicyAdapter).share,
          }));
          const placement = policy.place(shifted, executors, current);
          const used = new Map(executors.map((e) => [e.id, 0]));
          for (const a of shifted) {
            const holders = placement.get(a.id) ?? [];
            expect(holders.length, `${name} seed ${seed}: ${a.id} placed`).to.be.greaterThan(0);
            expect(new Set(holders).size).to.equal(holders.length);
            for (const h of holders) used.set(h, (used.get(h) ?? 0) + a.sizeBytes);
          }
          for (const e of executors)
            expect(used.get(e.id), `${name} seed ${seed}: ${e.id}`).to.be.at.most(e.capacityBytes);
          current = placement;
        }
      }
    });
  }

  it("rank-aware balances rank-weighted load better than random and round-robin, and replicates hot adapters", () => {
    let better = 0;
    for (let seed = 1; seed <= 20; seed++) {
      const { adapters, executors } = instance(seed, 60, 8, 4);
      const rank = policyByName("rank-aware").place(adapters, executors, new Map());
      const rr = policyByName("round-robin").place(adapters, executors, new Map());
      const random = policyByName("random", seed).place(adapters, executors, new Map());
      if (
        imbalance(adapters, executors, rank) <
        Math.min(imbalance(adapters, executors, rr), imbalance(adapters, executors, random))
      )
        better++;
      expect((rank.get("a0") ?? []).length, "the hottest adapter is replicated").to.be.greaterThan(1);
    }
    expect(better).to.be.at.least(18);
  });

  it("rebalancing moves adapters when traffic drifts, plain rank-aware keeps them", () => {
    const { adapters, executors } = instance(3, 60, 6, 4);
    const first = policyByName("rank-aware+rebalancing").place(adapters, executors, new Map());
    const drifted = adapters.map((a, i) => ({
      ...a,
      share: (adapters[(i + 20) % adapters.length] as PolicyAdapter).share,
    }));
    const kept = policyByName("rank-aware").place(drifted, executors, first);
    const moved = policyByName("rank-aware+rebalancing").place(drifted, executors, first);
    expect(imbalance(drifted, executors, moved)).to.be.at.most(imbalance(drifted, executors, kept));
    const changed = adapters.filter((a) => JSON.stringify(moved.get(a.id)) !== JSON.stringify(first.get(a.id))).length;
    const unchanged = adapters.filter((a) =>
      (kept.get(a.id) ?? []).every((h) => (first.get(a.id) ?? []).includes(h)),
    ).length;
    expect(unchanged).to.be.greaterThan(adapters.length * 0.8);
    expect(changed).to.be.greaterThan(0);
  });
});

describe("SLO-driven provisioning", () => {
  it("the knapsack DP matches brute force on small instances", () => {
    for (let seed = 1; seed <= 60; seed++) {
      const rng = new SeededRandom(seed);
      const n = 3 + (seed % 12);
      const adapters = Array.from({ length: n }, (_, i) => ({
        id: `a${i}`,
        rank: 8,
        sizeBytes: 1024 * rng.int(1, 40),
        share: rng.next(),
      }));
      const capacity = 1024 * rng.int(1, 120);
      const dp = knapsack(adapters, capacity);
      expect(dp.coverage, `seed ${seed}`).to.be.closeTo(knapsackBruteForce(adapters, capacity), 1e-9);
      expect(dp.bytes).to.be.at.most(capacity);
    }
  });

  it("recommends the smallest LoRA-server count that reaches the coverage the TTFT target needs", () => {
    const { adapters } = instance(5, 50, 1, 1);
    const cost = new CostModel(DEFAULT_CALIBRATION);
    const total = adapters.reduce((s, a) => s + a.sizeBytes, 0);
    const base = {
      adapters,
      serverCapacityBytes: Math.ceil(total / 10),
      requestRate: 10,
      decodeTokensPerRequest: 64,
      tpotMs: 1000,
    };
    const low = planCapacity({ ...base, coverage: 0.5 }, cost);
    const high = planCapacity({ ...base, coverage: 0.99 }, cost);
    expect(low.meetsTtft && high.meetsTtft).to.equal(true);
    expect(low.loraServers).to.be.lessThan(high.loraServers);
    expect(high.coverage).to.be.at.least(0.99);
    // One fewer server cannot reach the target.
    if (high.loraServers > 1) {
      const fewer = knapsack(
        adapters,
        (high.loraServers - 1) * base.serverCapacityBytes,
        Math.max(1024, Math.floor(((high.loraServers - 1) * base.serverCapacityBytes) / 20000)),
      );
      expect(fewer.coverage).to.be.lessThan(0.99);
    }
  });
});

describe("cluster simulator", function () {
  this.timeout(60_000);
  const cluster: ClusterSpec = {
    executors: 8,
    capacityBytes: 256 << 20,
    maxBatch: 32,
    mode: "coupled",
    loraServers: 2,
    kernel: "padded",
    rankAwareRouting: true,
    replaceEvery: 5,
  };
  const workload = { ...DEFAULT_WORKLOAD, adapters: 64, rate: 30, duration: 20, driftAt: 0.5, bytesPerRank: 1 << 20 };
  const cost = new CostModel(DEFAULT_CALIBRATION);
  const slo = { ttftMs: 1000, tpotMs: 100 };

  it("is deterministic for a seed and changes with it", () => {
    const a = simulate(workload, cluster, policyByName("rank-aware+rebalancing"), cost, slo);
    const b = simulate(workload, cluster, policyByName("rank-aware+rebalancing"), cost, slo);
    const c = simulate({ ...workload, seed: 2 }, cluster, policyByName("rank-aware+rebalancing"), cost, slo);
    expect(JSON.stringify(a)).to.equal(JSON.stringify(b));
    expect(JSON.stringify(a)).to.not.equal(JSON.stringify(c));
    expect(a.completed).to.be.greaterThan(0);
    expect(a.phases).to.not.equal(undefined);
  });

  it("costs more per step when ranks are padded to the batch maximum than at true rank", () => {
    const batch = {
      tokens: 32,
      adapters: [
        { tokens: 16, rank: 8 },
        { tokens: 16, rank: 128 },
      ],
    };
    expect(cost.loraStepUs(batch, "padded")).to.be.greaterThan(cost.loraStepUs(batch, "true"));
  });
});
