import { expect } from "chai";
import { ExecutorInfo, ExecutorKind, LoraMode } from "@loramesh/proto";
import { policyByName, POLICY_NAMES, type PolicyAdapter } from "@loramesh/policy";
import { decidePlacement } from "./mesh-placement";

const server = (id: string, capacity: number, maxRank = 0): ExecutorInfo =>
  ExecutorInfo.fromPartial({
    executorId: id,
    kind: ExecutorKind.EXECUTOR_KIND_LORA_SERVER,
    adapterCapacityBytes: capacity,
    maxRank,
  });
const worker = (id: string, mode: LoraMode, capacity: number): ExecutorInfo =>
  ExecutorInfo.fromPartial({
    executorId: id,
    kind: ExecutorKind.EXECUTOR_KIND_BASE_WORKER,
    loraMode: mode,
    adapterCapacityBytes: capacity,
  });

function adapters(n: number, share: (i: number) => number): PolicyAdapter[] {
  const ranks = [8, 16, 32, 64, 128];
  return Array.from({ length: n }, (_, i) => ({
    id: `a${String(i).padStart(2, "0")}`,
    rank: ranks[i % ranks.length] as number,
    sizeBytes: 1000 * (ranks[i % ranks.length] as number),
    share: share(i),
  }));
}

function bytesPerExecutor(list: readonly PolicyAdapter[], targets: ReadonlyMap<string, readonly string[]>) {
  const used = new Map<string, number>();
  for (const a of list) for (const t of targets.get(a.id) ?? []) used.set(t, (used.get(t) ?? 0) + a.sizeBytes);
  return used;
}

describe("mesh placement decision (the policies the provisioner runs)", () => {
  const servers = [server("s1", 400_000), server("s2", 400_000), server("s3", 400_000, 64)];

  for (const name of POLICY_NAMES) {
    it(`${name}: places every adapter on a LoRA server within budgets and rank limits`, () => {
      const list = adapters(20, (i) => 1 / (i + 1));
      const d = decidePlacement(
        { adapters: list, executors: servers, targets: new Map(), moving: new Set() },
        policyByName(name),
        { rebalance: false },
      );
      for (const a of list) expect(d.targets.get(a.id), a.id).to.have.length.greaterThan(0);
      for (const [id, bytes] of bytesPerExecutor(list, d.targets)) expect(bytes, id).to.be.at.most(400_000);
      for (const a of list.filter((x) => x.rank > 64)) expect(d.targets.get(a.id)).to.not.include("s3");
      expect(d.moves).to.deep.equal([]);
    });
  }

  it("between rebalances keeps placed adapters where they are", () => {
    const list = adapters(10, () => 0.1);
    const first = decidePlacement(
      { adapters: list, executors: servers, targets: new Map(), moving: new Set() },
      policyByName("round-robin"),
      { rebalance: false },
    );
    // Round-robin over a different order would move things; additive decisions do not.
    const more = [...adapters(12, () => 0.1)].reverse();
    const second = decidePlacement(
      { adapters: more, executors: servers, targets: first.targets, moving: new Set() },
      policyByName("round-robin"),
      { rebalance: false },
    );
    for (const a of list) expect(second.targets.get(a.id)).to.include.members(first.targets.get(a.id) ?? []);
    expect(second.targets.get("a11")).to.have.length.greaterThan(0);
  });

  it("rebalances a drifted placement as moves whose targets are added before their sources leave", () => {
    const list = adapters(12, () => 0);
    // Everything piled on s1 (as after traffic moved there); then the hot set is s1's.
    const piled = new Map(list.map((a) => [a.id, ["s1"]]));
    const hot = list.map((a, i) => ({ ...a, sizeBytes: 100, share: i < 6 ? 0.15 : 0.01 }));
    const d = decidePlacement(
      { adapters: hot, executors: servers, targets: piled, moving: new Set() },
      policyByName("rank-aware+rebalancing"),
      { rebalance: true, maxMoves: 4 },
    );
    expect(d.moves.length).to.be.within(1, 4);
    for (const m of d.moves) {
      expect(m.from).to.equal("s1");
      // The source stays a target until the move's switch job drains it.
      expect(d.targets.get(m.adapterId)).to.include.members([m.from, m.to]);
    }
    const additive = decidePlacement(
      { adapters: hot, executors: servers, targets: piled, moving: new Set() },
      policyByName("rank-aware+rebalancing"),
      { rebalance: false },
    );
    expect(additive.moves).to.deep.equal([]);
  });

  it("leaves an adapter that is being moved alone", () => {
    const list = adapters(3, () => 0.3);
    const targets = new Map([["a00", ["s1", "s2"]]]);
    const d = decidePlacement(
      { adapters: list, executors: servers, targets, moving: new Set(["a00"]) },
      policyByName("rank-aware+rebalancing"),
      { rebalance: true },
    );
    expect(d.targets.get("a00")).to.deep.equal(["s1", "s2"]);
    expect(d.moves.filter((m) => m.adapterId === "a00")).to.deep.equal([]);
  });

  it("gives coupled and hybrid workers local copies while they fit, and none to disaggregated ones", () => {
    const list = adapters(5, () => 0.2);
    const executors = [
      server("s1", 0),
      worker("coupled", LoraMode.LORA_MODE_COUPLED, 0),
      worker("hybrid", LoraMode.LORA_MODE_HYBRID, 40_000),
      worker("remote", LoraMode.LORA_MODE_DISAGGREGATED, 0),
    ];
    const d = decidePlacement(
      { adapters: list, executors, targets: new Map(), moving: new Set() },
      policyByName("rank-aware"),
      { rebalance: false },
    );
    for (const a of list) expect(d.targets.get(a.id)).to.include.members(["s1", "coupled"]);
    for (const a of list) expect(d.targets.get(a.id)).to.not.include("remote");
    const hybridBytes = bytesPerExecutor(list, d.targets).get("hybrid") ?? 0;
    expect(hybridBytes).to.be.greaterThan(0).and.at.most(40_000);
  });
});
