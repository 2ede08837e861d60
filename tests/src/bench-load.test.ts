import { expect } from "chai";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { REPO_ROOT } from "@loramesh/testing";

const CLI = join(REPO_ROOT, "packages", "cli", "dist", "bin.js");

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, LOG_LEVEL: "warn" } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("loramesh bench load (real mesh it starts itself)", function () {
  this.timeout(120_000);

  it("sends Poisson/Zipf traffic over registered adapters and reports latency percentiles and SLO attainment", async () => {
    const result = await run([
      "bench",
      "load",
      "--local",
      "--mode",
      "hybrid",
      "--adapters",
      "5",
      "--rate",
      "3",
      "--duration",
      "6",
      "--drift",
      "0.5",
      "--json",
      "--per-request",
    ]);
    expect(result.code, result.stderr).to.equal(0);
    const report = JSON.parse(result.stdout) as Record<string, unknown> & {
      sent: number;
      completed: number;
      errors: number;
      ttftMs: { p50: number; p95: number; p99: number };
      tpotMs: { mean: number };
      perAdapter: Record<string, { requests: number }>;
      phases: { before: unknown; after: unknown };
      requests: Array<{ arrivalS: number; ttftMs: number; tpotMs: number; tokens: number }>;
    };
    expect(report.sent).to.be.greaterThan(5);
    expect(report.errors).to.equal(0);
    expect(report.completed).to.equal(report.sent);
    expect(report.ttftMs.p50).to.be.greaterThan(0);
    expect(report.ttftMs.p99).to.be.at.least(report.ttftMs.p95);
    expect(report.tpotMs.mean).to.be.greaterThan(0);
    for (const name of Object.keys(report.perAdapter)) expect(name).to.match(/^load-a\d{4}$/);
    expect(report.phases).to.have.keys(["before", "after"]);
    // --per-request: every completed request, whose TTFTs give the report's own P95 (nearest rank).
    expect(report.requests).to.have.length(report.completed);
    const ttft = report.requests.map((q) => q.ttftMs).sort((a, b) => a - b);
    expect(ttft[Math.min(ttft.length - 1, Math.floor(0.95 * ttft.length))]).to.equal(report.ttftMs.p95);
    const meanTpot = report.requests.reduce((a, q) => a + q.tpotMs, 0) / report.requests.length;
    expect(meanTpot).to.be.closeTo(report.tpotMs.mean, 1e-9);
    expect(report.requests.every((q) => q.tokens > 0 && q.arrivalS >= 0)).to.equal(true);
    expect(result.stderr).to.contain("registering 5 adapters");
    expect(result.stderr).to.match(/bench load: 3\.00 req\/s, \d+\/6 s, sent \d+/);
  });

  it("rejects an unknown bench and bad ranks with a failing status and a clear message", async () => {
    const unknown = await run(["bench", "frobnicate"]);
    expect(unknown.code).to.equal(1);
    expect(unknown.stderr).to.contain("use: bench load");
    const badRanks = await run(["bench", "load", "--ranks", "8,x"]);
    expect(badRanks.code).to.equal(1);
    expect(badRanks.stderr).to.contain("--ranks must be positive integers");
  });
});
