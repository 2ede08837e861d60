import { expect } from "chai";
import { Engine, type StepTiming } from "./engine";
import { LocalLoraBackend } from "./local-lora-backend";
import { Model } from "./model";
import { Tokenizer } from "@loramesh/formats";
import { loadAdapter } from "./adapter";
import { adapterDir, golden, modelDir, MODELS } from "./test-fixtures";

function engine(m: string, options: ConstructorParameters<typeof Engine>[2] = {}): Engine {
  const model = Model.load(modelDir(m));
  const lora = new LocalLoraBackend(model.config);
  for (const c of golden(m).cases)
    if (c.adapter && !lora.has(c.adapter)) lora.add(c.adapter, loadAdapter(adapterDir(m, c.adapter), model.config));
  return new Engine(model, Tokenizer.load(modelDir(m), model.config.eosTokenIds), { lora, ...options });
}

for (const m of MODELS) {
  describe(`continuous batching: ${m}`, function () {
    this.timeout(120_000);
    const g = golden(m);
    const adapters = [undefined, ...new Set(g.cases.map((c) => c.adapter).filter((a): a is string => a !== null))];

    it("one batch holding all adapters and the base, at different positions, gives each sequence's logits alone", async () => {
      // Sequences of different lengths, each with a different adapter (or none).
      const jobs = adapters.map((adapterId, i) => {
        const p = g.prompts[i % g.prompts.length] as { ids: number[] };
        return { adapterId, ids: [...p.ids, ...p.ids.slice(1, 1 + (i % 5) * 3)] };
      });
      const alone: Float32Array[][] = [];
      const single = engine(m);
      for (const j of jobs) alone.push(await single.score(j.ids, j.adapterId));

      // A small token budget cuts prompts into chunks, so one step mixes sequences at different
      // offsets, with different adapters, and some sequences already past their prompt.
      const batched = engine(m, { maxBatchTokens: 11 });
      const together = await Promise.all(jobs.map((j) => batched.score(j.ids, j.adapterId)));
      let worst = 0;
      together.forEach((rows, i) => {
        rows.forEach((row, r) => {
          const want = (alone[i] as Float32Array[])[r] as Float32Array;
          for (let v = 0; v < row.length; v++)
            worst = Math.max(worst, Math.abs((row[v] as number) - (want[v] as number)));
        });
      });
      expect(worst).to.be.at.most(1e-5);
      expect(batched.stats().steps).to.be.greaterThan(jobs.length);
    });

    it("decodes many sequences together exactly as each alone (greedy), and frees every KV block", async () => {
      const jobs = g.cases.slice(0, 12);
      const single = engine(m);
      const alone: number[][] = [];
      for (const c of jobs) {
        const r = await single.submit({
          promptIds: (g.prompts[c.prompt] as { ids: number[] }).ids,
          ...(c.adapter ? { adapterId: c.adapter } : {}),
          sampling: { maxTokens: 10, ignoreEos: true },
        }).result;
        alone.push(r.tokenIds);
      }
      const batched = engine(m, { maxBatchTokens: 16, blockSize: 4 });
      // Staggered arrivals: later sequences join while earlier ones are decoding.
      const results = await Promise.all(
        jobs.map(async (c, i) => {
          await new Promise((r) => setTimeout(r, i * 3));
          return batched.submit({
            promptIds: (g.prompts[c.prompt] as { ids: number[] }).ids,
            ...(c.adapter ? { adapterId: c.adapter } : {}),
            sampling: { maxTokens: 10, ignoreEos: true },
          }).result;
        }),
      );
      expect(results.map((r) => r.tokenIds)).to.deep.equal(alone);
      expect(batched.stats().kvBlocksUsed).to.equal(0);
    });
  });
}

describe("engine requests", function () {
  this.timeout(60_000);
  const m = "tiny-llama";
  const g = golden(m);
  const prompt = (g.prompts[0] as { ids: number[] }).ids;

  it("cancellation ends the sequence and frees its KV blocks", async () => {
    const e = engine(m, { blockSize: 4 });
    const updates: number[] = [];
    const handle = e.submit({ promptIds: prompt, sampling: { maxTokens: 400, ignoreEos: true } }, (u) => {
      updates.push(...u.tokenIds);
      if (updates.length === 3) handle.cancel();
    });
    const result = await handle.result;
    expect(result.finishReason).to.equal("cancelled");
    expect(result.tokenIds.length).to.be.within(3, 4);
    expect(e.stats()).to.include({ kvBlocksUsed: 0, running: 0, cancelled: 1 });
  });

  it("stops on max tokens, stop token ids and stop strings, and seeds sampling reproducibly", async () => {
    const e = engine(m);
    const greedy = await e.submit({ promptIds: prompt, sampling: { maxTokens: 8, ignoreEos: true } }).result;
    expect(greedy.finishReason).to.equal("length");
    expect(greedy.tokenIds).to.have.length(8);

    const stopId = greedy.tokenIds[3] as number;
    const byId = await e.submit({
      promptIds: prompt,
      sampling: { maxTokens: 8, ignoreEos: true, stopTokenIds: [stopId] },
    }).result;
    expect(byId.finishReason).to.equal("stop");
    expect(byId.tokenIds).to.deep.equal(greedy.tokenIds.slice(0, greedy.tokenIds.indexOf(stopId)));

    const stop = greedy.text.slice(2, 4);
    const streamed: string[] = [];
    const byText = await e.submit(
      { promptIds: prompt, sampling: { maxTokens: 8, ignoreEos: true, stop: [stop] } },
      (u) => streamed.push(u.text),
    ).result;
    expect(byText.finishReason).to.equal("stop");
    expect(byText.text).to.equal(greedy.text.slice(0, greedy.text.indexOf(stop)));
    expect(streamed.join("")).to.equal(byText.text);

    const sample = (seed: number) =>
      e.submit({
        promptIds: prompt,
        sampling: { maxTokens: 12, temperature: 1.3, topP: 0.9, topK: 50, seed, ignoreEos: true },
      }).result;
    const [a, b, c] = await Promise.all([sample(7), sample(7), sample(8)]);
    expect(a.tokenIds).to.deep.equal(b.tokenIds);
    expect(a.tokenIds).to.not.deep.equal(c.tokenIds);
    const topK1 = await e.submit({
      promptIds: prompt,
      sampling: { maxTokens: 8, temperature: 2, topK: 1, seed: 3, ignoreEos: true },
    }).result;
    expect(topK1.tokenIds).to.deep.equal(greedy.tokenIds);
  });

  it("stops at the end-of-sequence token unless told to ignore it", async () => {
    const e = engine("tiny-mixtral");
    const gm = golden("tiny-mixtral");
    const c = gm.cases.find((x) => x.output_ids.includes(2)) as (typeof gm.cases)[number];
    const r = await e.submit({
      promptIds: (gm.prompts[c.prompt] as { ids: number[] }).ids,
      ...(c.adapter ? { adapterId: c.adapter } : {}),
      sampling: { maxTokens: 24 },
    }).result;
    expect(r.finishReason).to.equal("eos");
    expect(r.tokenIds).to.deep.equal(c.output_ids.slice(0, c.output_ids.indexOf(2)));
  });

  it("rejects bad requests with typed errors", async () => {
    const e = engine(m);
    expect(() => e.submit({ promptIds: [] })).to.throw(/prompt is empty/);
    expect(() => e.submit({ promptIds: [1, 99999] })).to.throw(/outside the vocabulary/);
    expect(() => e.submit({ promptIds: prompt, sampling: { maxTokens: 100_000 } })).to.throw(
      /exceeds the maximum sequence length/,
    );
    expect(() => e.submit({ promptIds: prompt, adapterId: "nope" })).to.throw(/adapter nope is not loaded/);
    expect(() => e.submit({ promptIds: prompt, sampling: { topP: 1.5 } })).to.throw(/top_p/);
    try {
      e.submit({ promptIds: prompt, adapterId: "nope" });
    } catch (err) {
      expect((err as Error).name).to.equal("NotFoundError");
    }
  });

  it("tells the step observer every step's batch shape: its prompt tokens and decodes add up", async () => {
    const steps: StepTiming[] = [];
    const e = engine(m, { prefixCache: false, stepObserver: (s) => steps.push(s) });
    const prompts = [0, 1].map((i) => (g.prompts[i] as { ids: number[] }).ids);
    // One sequence on the base model, one on an adapter: the observer names each row's adapter.
    const adapter = g.cases.map((c) => c.adapter).find((a): a is string => a !== null);
    const results = await Promise.all(
      prompts.map(
        (ids, i) =>
          e.submit({
            promptIds: ids,
            ...(i === 1 && adapter ? { adapterId: adapter } : {}),
            sampling: { maxTokens: 4, ignoreEos: true },
          }).result,
      ),
    );
    expect(results.map((r) => r.tokenIds.length)).to.deep.equal([4, 4]);
    // The last step's period ends after the loop's I/O turn, which follows the results.
    await new Promise((r) => setImmediate(r));
    expect(steps).to.have.length(e.stats().steps);
    const sum = (f: (s: StepTiming) => number): number => steps.reduce((a, s) => a + f(s), 0);
    // Every prompt token is fed once; each sequence's first token comes from its prefill, the
    // other three from one decode each.
    expect(sum((s) => s.prefillTokens)).to.equal(prompts[0]!.length + prompts[1]!.length);
    expect(sum((s) => s.tokens - s.prefillTokens)).to.equal(6);
    for (const s of steps) {
      expect(s.sequences).to.be.within(1, 2);
      expect(s.tokens).to.be.at.least(s.sequences);
      expect(s.periodUs).to.be.greaterThan(0);
      // The forward pass is part of the period; steps start in order, on the epoch clock.
      expect(s.forwardUs).to.be.greaterThan(0).and.at.most(s.periodUs);
      expect(s.startedAtMs).to.be.closeTo(Date.now(), 60_000);
      expect(s.adapters).to.have.length(s.sequences);
    }
    // Each sequence ran in 4 steps (one prefill, three decodes) if its prompt fit one chunk; at least that.
    const rows = steps.flatMap((s) => s.adapters);
    expect(rows.filter((a) => a === undefined).length).to.be.at.least(4);
    expect(adapter).to.be.a("string");
    expect(rows.filter((a) => a === adapter).length).to.be.at.least(4);
    expect(rows.filter((a) => a !== undefined && a !== adapter)).to.have.length(0);
  });

  it("preempts and recomputes when the KV cache is full, still producing the same tokens", async () => {
    const small = engine(m, { kvBlocks: 8, blockSize: 4 });
    const roomy = engine(m);
    const jobs = [0, 1, 2].map((i) => (g.prompts[i] as { ids: number[] }).ids);
    const want = await Promise.all(
      jobs.map((ids) => roomy.submit({ promptIds: ids, sampling: { maxTokens: 6, ignoreEos: true } }).result),
    );
    const got = await Promise.all(
      jobs.map((ids) => small.submit({ promptIds: ids, sampling: { maxTokens: 6, ignoreEos: true } }).result),
    );
    expect(got.map((r) => r.tokenIds)).to.deep.equal(want.map((r) => r.tokenIds));
    expect(small.stats().kvBlocksUsed).to.equal(0);
    expect(small.stats().preempted).to.be.greaterThan(0);
  });
});
