// The fuzz tests' judge must itself catch what it claims to: a judge that passes everything would
// make "accepted bad = 0" mean nothing.
import { expect } from "chai";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { adapterRuleBroken, configRuleBroken, weightsRuleBroken } from "./adapter-oracle";
import { GOLDEN_DIR } from "./paths";

const SQL = join(GOLDEN_DIR, "adapters", "tiny-llama", "sql-r8");

describe("adapter oracle (the fuzz tests' independent judge)", () => {
  const config = JSON.parse(readFileSync(join(SQL, "adapter_config.json"), "utf8")) as Record<string, unknown>;
  const weights = readFileSync(join(SQL, "adapter_model.safetensors"));
  const headerEnd = 8 + Number(weights.readBigUInt64LE(0));

  it("passes a good adapter", () => {
    expect(adapterRuleBroken(SQL)).to.equal(undefined);
  });

  it("catches bad r, lora_alpha, patterns and DoRA", () => {
    for (const [field, value] of [
      ["r", 0],
      ["r", "8"],
      ["lora_alpha", -1],
      ["lora_alpha", 1e308],
      ["lora_alpha", "16"],
      ["rank_pattern", { q_proj: 0 }],
      ["alpha_pattern", { o_proj: -2 }],
      ["use_dora", true],
    ] as const)
      expect(
        configRuleBroken(JSON.stringify({ ...config, [field]: value })),
        `${field}=${JSON.stringify(value)}`,
      ).to.be.a("string");
    expect(configRuleBroken("{")).to.be.a("string");
  });

  it("catches NaN, infinite and out-of-bound weights, and a tensor that is not F32", () => {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, 1e18, -3e5]) {
      const copy = Buffer.from(weights);
      copy.writeFloatLE(bad, headerEnd + 4);
      expect(weightsRuleBroken(copy), String(bad)).to.be.a("string");
    }
    const header = weights.subarray(8, headerEnd).toString("utf8").replace('"F32"', '"F16"');
    const f16 = Buffer.concat([weights.subarray(0, 8), Buffer.from(header), weights.subarray(headerEnd)]);
    expect(weightsRuleBroken(f16)).to.match(/dtype/);
  });
});
