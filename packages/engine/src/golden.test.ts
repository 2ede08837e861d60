import { expect } from "chai";
import { Engine } from "./engine";
import { LocalLoraBackend } from "./local-lora-backend";
import { Model } from "./model";
import { SafetensorsFile, Tokenizer } from "@loramesh/formats";
import { loadAdapter } from "./adapter";
import { join } from "node:path";
import { GOLDEN_DIR } from "@loramesh/testing";
import { adapterDir, golden, modelDir, MODELS } from "./test-fixtures";

/** Bound on |logit − reference| in fp32 (the fixtures' README suggests about 1e-3). */
const LOGIT_TOLERANCE = 1e-3;

function engineWithAllAdapters(m: string, options: ConstructorParameters<typeof Engine>[2] = {}): Engine {
  const model = Model.load(modelDir(m));
  const lora = new LocalLoraBackend(model.config);
  for (const c of golden(m).cases)
    if (c.adapter && !lora.has(c.adapter)) lora.add(c.adapter, loadAdapter(adapterDir(m, c.adapter), model.config));
  return new Engine(model, Tokenizer.load(modelDir(m), model.config.eosTokenIds), { lora, ...options });
}

for (const m of MODELS) {
  describe(`golden fixtures: ${m} against Hugging Face transformers + PEFT`, function () {
    this.timeout(120_000);
    const g = golden(m);
    let engine: Engine;
    let expected: SafetensorsFile;

    before(() => {
      engine = engineWithAllAdapters(m);
      expected = SafetensorsFile.open(join(GOLDEN_DIR, "expected", `${m}.logits.safetensors`));
    });
    after(() => expected.close());

    it("tokenizes every prompt to the reference ids", () => {
      for (const p of g.prompts) expect(engine.tokenizer?.encode(p.text)).to.deep.equal(p.ids);
    });

    it(`matches every case's logits by teacher forcing within ${LOGIT_TOLERANCE}`, async () => {
      let worst = 0;
      for (const c of g.cases) {
        const prompt = (g.prompts[c.prompt] as { ids: number[] }).ids;
        const rows = await engine.score([...prompt, ...c.output_ids.slice(0, g.steps - 1)], c.adapter ?? undefined);
        const want = expected.readF32(`${c.adapter ?? "base"}/${c.prompt}`);
        const V = want.length / g.steps;
        for (let s = 0; s < g.steps; s++) {
          const row = rows[prompt.length - 1 + s] as Float32Array;
          for (let v = 0; v < V; v++)
            worst = Math.max(worst, Math.abs((row[v] as number) - (want[s * V + v] as number)));
        }
        expect(worst, `${c.adapter ?? "base"}/${c.prompt}`).to.be.at.most(LOGIT_TOLERANCE);
      }
      expect(g.cases.length).to.be.greaterThan(0);
    });

    it("generates the reference greedy tokens for every case, all requests in flight at once", async () => {
      // Every case's smallest top-2 margin is above 1e-4, far above this engine's ~1e-5 error.
      const handles = g.cases.map((c) =>
        engine.submit({
          promptIds: (g.prompts[c.prompt] as { ids: number[] }).ids,
          ...(c.adapter ? { adapterId: c.adapter } : {}),
          sampling: { maxTokens: g.steps, ignoreEos: true },
        }),
      );
      const results = await Promise.all(handles.map((h) => h.result));
      results.forEach((r, i) => {
        const c = g.cases[i] as (typeof g.cases)[number];
        if (c.min_top2_margin > 1e-4)
          expect(r.tokenIds, `${c.adapter ?? "base"}/${c.prompt}`).to.deep.equal(c.output_ids);
      });
      expect(engine.stats().kvBlocksUsed).to.equal(0);
    });
  });
}
