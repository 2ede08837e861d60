import { expect } from "chai";
import { Tokenizer } from "@loramesh/formats";
import { Engine, type SequenceUpdate } from "./engine";
import { Model } from "./model";
import { Rng, samplingOptions, tokenLogprob, type TokenLogprob } from "./sampling";
import { golden, modelDir } from "./test-fixtures";

describe("logprobs", function () {
  this.timeout(120_000);

  it("are a log-softmax: exp sums to 1 over the vocabulary and the argmax has the largest", () => {
    const rng = new Rng(7);
    const logits = Float32Array.from({ length: 512 }, () => (rng.next() - 0.5) * 20);
    const best = logits.indexOf(Math.max(...logits));
    const lp = tokenLogprob(logits, best, logits.length);
    const sum = lp.top.reduce((a, t) => a + Math.exp(t.logprob), 0);
    expect(sum).to.be.closeTo(1, 1e-9);
    expect(lp.top).to.have.length(logits.length);
    expect(lp.top[0]?.tokenId).to.equal(best);
    expect(lp.logprob).to.equal(lp.top[0]?.logprob);
    for (let i = 1; i < lp.top.length; i++)
      expect((lp.top[i] as TokenLogprob).logprob).to.be.at.most((lp.top[i - 1] as TokenLogprob).logprob);
  });

  it("refuse a count outside [0, 20]", () => {
    expect(() => samplingOptions({ logprobs: 21 })).to.throw(/logprobs/);
    expect(() => samplingOptions({ logprobs: -1 })).to.throw(/logprobs/);
  });

  it("stream with each greedy token of a real model: the chosen token is the most likely", async () => {
    const model = Model.load(modelDir("tiny-llama"));
    const engine = new Engine(model, Tokenizer.load(modelDir("tiny-llama"), model.config.eosTokenIds));
    const prompt = (golden("tiny-llama").prompts[0] as { ids: number[] }).ids;
    const updates: SequenceUpdate[] = [];
    const result = await engine.submit(
      { promptIds: prompt, sampling: { maxTokens: 6, ignoreEos: true, logprobs: 3 } },
      (u) => updates.push(u),
    ).result;
    const logprobs = updates.flatMap((u) => u.logprobs ?? []);
    expect(logprobs.map((l) => l.tokenId)).to.deep.equal(result.tokenIds);
    for (const l of logprobs) {
      expect(l.top).to.have.length(3);
      expect(l.top[0]?.tokenId).to.equal(l.tokenId);
      expect(l.logprob).to.equal(l.top[0]?.logprob);
      expect(l.logprob).to.be.at.most(0);
    }
    // Not asked, not computed.
    const plain: SequenceUpdate[] = [];
    await engine.submit({ promptIds: prompt, sampling: { maxTokens: 2 } }, (u) => plain.push(u)).result;
    expect(plain.every((u) => u.logprobs === undefined)).to.equal(true);
  });
});
