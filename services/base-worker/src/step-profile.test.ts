import { expect } from "chai";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { StepProfile, type StepProfileFile } from "./step-profile";

describe("the worker's step profile", () => {
  const dir = mkdtempSync(join(tmpdir(), "loramesh-step-profile-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("keeps steps by shape with the batch's rank sum, from the ranks the placement knows", () => {
    const file = join(dir, "steps.json");
    const ranks = new Map([
      ["a", 8],
      ["b", 64],
    ]);
    const profile = new StepProfile(file, "w1", (id) => ranks.get(id));
    const step = { sequences: 2, tokens: 2, prefillTokens: 0, finished: 0 };
    // The first step is kept on its own, out of the shapes.
    profile.record({ sequences: 1, tokens: 13, prefillTokens: 13, finished: 0, adapters: ["a"], periodUs: 80000 });
    profile.record({ ...step, adapters: ["a", "b"], periodUs: 1000 });
    profile.record({ ...step, adapters: ["b", "a"], periodUs: 3000 });
    // A base-model row and an adapter the placement does not know count 0.
    profile.record({ ...step, adapters: [undefined, "gone"], periodUs: 500 });
    profile.close();
    const body = JSON.parse(readFileSync(file, "utf8")) as StepProfileFile;
    expect(body.executorId).to.equal("w1");
    const byRank = new Map(body.steps.map((s) => [s.rankSum, s]));
    expect([...byRank.keys()].sort((x, y) => x - y)).to.deep.equal([0, 72]);
    expect(byRank.get(72)).to.deep.include({ count: 2, sumUs: 4000, sumSqUs: 1e6 + 9e6, sequences: 2 });
    expect(byRank.get(0)).to.deep.include({ count: 1, sumUs: 500 });
    expect(body.steps.some((s) => s.prefillTokens > 0)).to.equal(false);
    expect(body.first).to.deep.include({ sequences: 1, prefillTokens: 13, rankSum: 8, count: 1, sumUs: 80000 });
  });
});
