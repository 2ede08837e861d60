import { expect } from "chai";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { GOLDEN_DIR, REPO_ROOT } from "@loramesh/testing";

const CLI = join(REPO_ROOT, "packages", "cli", "dist", "bin.js");
const cli = (...args: string[]) =>
  spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 60_000, maxBuffer: 64 * 1024 * 1024 });
const model = join(GOLDEN_DIR, "models", "tiny-llama");
const adapter = join(GOLDEN_DIR, "adapters", "tiny-llama", "sql-r8");

interface Case {
  adapter: string | null;
  prompt: number;
  output_ids: number[];
}
const golden = JSON.parse(readFileSync(join(GOLDEN_DIR, "expected", "tiny-llama.json"), "utf8")) as {
  prompts: Array<{ ids: number[] }>;
  cases: Case[];
};

describe("offline CLI: loramesh score and generate", function () {
  this.timeout(120_000);

  it("score prints one logits row per input position, and the adapter changes them", () => {
    const ids = (golden.prompts[1] as { ids: number[] }).ids;
    const base = cli("score", "--model", model, "--ids", ids.join(","));
    expect(base.status, base.stderr).to.equal(0);
    const parsed = JSON.parse(base.stdout) as { logits: number[][] };
    expect(parsed.logits).to.have.length(ids.length);
    expect(parsed.logits[0]).to.have.length(512);
    // The argmax of the last row is the first greedy token of the reference.
    const last = parsed.logits[ids.length - 1] as number[];
    const first = golden.cases.find((c) => c.adapter === null && c.prompt === 1) as Case;
    expect(last.indexOf(Math.max(...last))).to.equal(first.output_ids[0]);
    const withAdapter = JSON.parse(
      cli("score", "--model", model, "--adapter", adapter, "--ids", ids.join(",")).stdout,
    ) as { logits: number[][] };
    expect(withAdapter.logits[0]).to.not.deep.equal(parsed.logits[0]);
  });

  it("generate --json gives the reference greedy tokens", () => {
    const c = golden.cases.find((x) => x.adapter === "sql-r8" && x.prompt === 0) as Case;
    const ids = (golden.prompts[0] as { ids: number[] }).ids;
    const out = cli(
      "generate",
      "--model",
      model,
      "--adapter",
      adapter,
      "--max-tokens",
      "8",
      "--ids",
      ids.join(","),
      "--json",
    );
    expect(out.status, out.stderr).to.equal(0);
    const result = JSON.parse(out.stdout) as { token_ids: number[]; text: string; finish_reason: string };
    expect(result.token_ids).to.deep.equal(c.output_ids.slice(0, 8));
    expect(result.finish_reason).to.equal("length");
  });

  it("streams text for a text prompt", () => {
    const out = cli("generate", "--model", model, "--max-tokens", "6", "def forward(self, hidden_states):");
    expect(out.status, out.stderr).to.equal(0);
    expect(out.stdout.length).to.be.greaterThan(1);
  });

  it("fails with a clear message for a malformed adapter or bad ids", () => {
    const bad = cli("score", "--model", model, "--adapter", join(GOLDEN_DIR, "models", "tiny-llama"), "--ids", "1,2");
    expect(bad.status).to.equal(1);
    expect(bad.stderr).to.contain("has no adapter_config.json");
    const ids = cli("score", "--model", model, "--ids", "1,x");
    expect(ids.status).to.equal(1);
    expect(ids.stderr).to.contain("--ids must be comma-separated");
    const vocab = cli("score", "--model", model, "--ids", "1,999999");
    expect(vocab.stderr).to.contain("outside the vocabulary");
  });
});
