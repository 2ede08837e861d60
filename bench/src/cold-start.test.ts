// The cold-start bench's harness, run once on a tiny model so it cannot rot: every case completes
// through real processes, its files come from where the case says, and its tokens equal their
// references. Timing is not asserted (the machine may be busy); only that each sample exists.
import { expect } from "chai";
import { CASE_NAMES, runColdStart } from "./cold-start-harness";

describe("cold-start bench harness (real mesh: router, provisioner, worker, two LoRA servers, a hub behind a simulated link)", function () {
  this.timeout(900_000);

  it("runs every case once and reports medians, samples, origins and matching tokens", async () => {
    const r = await runColdStart({
      trials: 1,
      layers: 2,
      hidden: 256,
      rank: 128,
      source: "hf",
      sourceMiBps: 8,
      sourceLatencyMs: 5,
      maxTokens: 3,
    });
    expect(Object.keys(r.ttft_ms).sort()).to.deep.equal([...CASE_NAMES].sort());
    expect(r).to.include.keys("model", "adapter_mib", "ttft_ms", "machine");
    expect(r.model).to.include({ layers: 2, hidden: 256, dtype: "bf16" });
    expect(r.adapter_mib).to.be.greaterThan(1);
    expect(r.machine.cores).to.be.greaterThan(0);
    for (const c of CASE_NAMES) {
      expect(r.samples_ms[c], c).to.have.length(c === "warm" ? 4 : 1);
      for (const ms of r.samples_ms[c]) expect(ms, c).to.be.greaterThan(0);
      expect(r.ttft_ms[c], c).to.equal(
        [...r.samples_ms[c]].sort((a, b) => a - b)[Math.floor(r.samples_ms[c].length / 2)],
      );
      expect(r.checks[c].originsMatch, `${c}: ${r.checks[c].origins.join(", ")}`).to.equal(true);
      expect(r.checks[c].tokensMatch, c).to.equal(true);
      expect(r.checks[c].differsFromBase, c).to.equal(true);
      expect(r.checks[c].tokens, c).to.have.length(3);
    }
    expect(r.checks.source.origins).to.deep.equal(["source"]);
    expect(r.checks.peer_layerwise.origins).to.deep.equal(["peer"]);
    expect(r.base_tokens).to.have.length(3);
  });
});
