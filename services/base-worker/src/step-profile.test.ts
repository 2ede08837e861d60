import { expect } from "chai";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SERIES_MAX, StepProfile, type StepProfileFile } from "./step-profile";

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
    const step = {
      sequences: 2,
      tokens: 2,
      prefillTokens: 0,
      finished: 0,
      forwardUs: 400,
      nativeUs: 350,
      startedAtMs: 1,
    };
    // The first step is kept on its own, out of the shapes.
    profile.record({ ...step, sequences: 1, tokens: 13, prefillTokens: 13, adapters: ["a"], periodUs: 80000 });
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
    // No series unless asked for.
    expect(body.series).to.equal(undefined);
  });

  it("with a series, writes every step in order when it closes, and not on the periodic rewrite", () => {
    const file = join(dir, "series.json");
    const profile = new StepProfile(file, "w1", () => undefined, true);
    const step = { sequences: 8, tokens: 8, prefillTokens: 0, finished: 0, adapters: [] };
    for (let i = 0; i < SERIES_MAX + 3; i++)
      profile.record({ ...step, periodUs: 1000 + i + 0.4, forwardUs: 500 + i, nativeUs: 450.4, startedAtMs: 10 + i });
    profile.flush();
    expect((JSON.parse(readFileSync(file, "utf8")) as StepProfileFile).series).to.equal(undefined);
    profile.close();
    const series = (JSON.parse(readFileSync(file, "utf8")) as StepProfileFile).series ?? [];
    // The oldest steps past SERIES_MAX are dropped; periods are whole µs.
    expect(series).to.have.length(SERIES_MAX);
    expect(series[0]).to.deep.equal({
      atMs: 13,
      sequences: 8,
      tokens: 8,
      prefillTokens: 0,
      finished: 0,
      periodUs: 1003,
      forwardUs: 503,
      nativeUs: 450,
    });
    expect(series[SERIES_MAX - 1]?.atMs).to.equal(10 + SERIES_MAX + 2);
  });
});
