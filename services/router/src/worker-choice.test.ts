import { expect } from "chai";
import { ExecutorInfo, ExecutorKind } from "@loramesh/proto";
import { chooseWorker, InFlightRanks, rankMix } from "./worker-choice";

const w = (id: string): ExecutorInfo =>
  ExecutorInfo.fromPartial({ executorId: id, kind: ExecutorKind.EXECUTOR_KIND_BASE_WORKER });
const none = { localHolders: new Set<string>() };

describe("rank-aware worker choice", () => {
  it("keeps a small-rank request out of a worker busy with large ranks when another is as free", () => {
    const inFlight = new InFlightRanks();
    inFlight.add("w1", 128);
    inFlight.add("w1", 64);
    inFlight.add("w2", 8);
    inFlight.add("w2", 8);
    expect(chooseWorker([w("w1"), w("w2")], inFlight, { rank: 8, ...none })?.executorId).to.equal("w2");
    // ...and a large-rank request away from the small-rank batch.
    expect(chooseWorker([w("w1"), w("w2")], inFlight, { rank: 128, ...none })?.executorId).to.equal("w1");
  });

  it("lets load balance win when grouping would cost more than the slack", () => {
    const inFlight = new InFlightRanks();
    for (let i = 0; i < 4; i++) inFlight.add("w2", 8);
    inFlight.add("w1", 128);
    expect(chooseWorker([w("w1"), w("w2")], inFlight, { rank: 8, ...none }, 1)?.executorId).to.equal("w1");
    expect(chooseWorker([w("w1"), w("w2")], inFlight, { rank: 8, ...none }, 4)?.executorId).to.equal("w2");
  });

  it("prefers a worker holding the adapter locally on equal rank mix, and forgets finished requests", () => {
    const inFlight = new InFlightRanks();
    const local = { rank: 16, localHolders: new Set(["w2"]) };
    expect(chooseWorker([w("w1"), w("w2")], inFlight, local)?.executorId).to.equal("w2");
    inFlight.add("w1", 64);
    inFlight.remove("w1", 64);
    expect(inFlight.of("w1")).to.deep.equal([]);
    expect(rankMix([8, 16, 64], 8)).to.equal(2);
    expect(chooseWorker([], inFlight, local)).to.equal(undefined);
  });
});
