import { expect } from "chai";
import { resolve } from "node:path";
import { Continuation } from "./continuation";
import { PromptEncoder } from "./prompt-encoder";
import { DEFAULT_SAMPLING, type TokenDelta } from "./types";

const MODEL = resolve(__dirname, "..", "..", "..", "..", "tests", "fixtures", "golden", "models", "tiny-llama");

describe("router continuation (resubmitting a lost worker's request)", () => {
  const prompts = new PromptEncoder(MODEL);
  const generated = prompts.encode({ kind: "text", text: " the quick brown fox jumps over the lazy dog" });

  it("resubmits prompt + tokens sent with the rest of the budget, and counts usage over both workers", () => {
    const c = new Continuation([1, 2, 3], { ...DEFAULT_SAMPLING, maxTokens: 10, minTokens: 4 }, (ids) =>
      prompts.decode(ids),
    );
    expect(c.sequence().promptTokenIds).to.deep.equal([1, 2, 3]);
    c.forward({ tokenIds: [7, 8, 9], text: "abc" }, () => undefined);
    c.takeover();
    const next = c.sequence();
    expect(next.promptTokenIds).to.deep.equal([1, 2, 3, 7, 8, 9]);
    expect(next.sampling.maxTokens).to.equal(7);
    expect(next.sampling.minTokens).to.equal(1);
    const out = c.outcome({
      finishReason: "length",
      usage: { promptTokens: 6, completionTokens: 7 },
      timings: undefined,
    });
    expect(out.usage).to.deep.equal({ promptTokens: 3, completionTokens: 10 });
  });

  it("spells the text across the seam exactly as one stream would", () => {
    const seen: TokenDelta[] = [];
    const c = new Continuation([1], { ...DEFAULT_SAMPLING, maxTokens: 64 }, (ids) => prompts.decode(ids));
    const half = Math.floor(generated.length / 2);
    // The first worker streamed half the tokens, holding back nothing.
    for (let i = 0; i < half; i++) {
      const text = prompts.decode(generated.slice(0, i + 1)).slice(seenText(seen).length);
      c.forward({ tokenIds: [generated[i] as number], text }, (d) => seen.push(d));
    }
    c.takeover();
    // The second worker decodes only its own tokens: its first piece may lose a leading space.
    for (const id of generated.slice(half))
      c.forward({ tokenIds: [id], text: prompts.decode([id]).trim() }, (d) => seen.push(d));
    c.forward({ tokenIds: [], text: "" }, (d) => seen.push(d));
    expect(seen.flatMap((d) => d.tokenIds)).to.deep.equal(generated);
    expect(seenText(seen)).to.equal(prompts.decode(generated));
  });

  it("resumes a stream another router lost: prompt + the client's tokens, the rest of the budget, the text from the seam on", () => {
    const half = Math.floor(generated.length / 2);
    const c = new Continuation(
      [1],
      { ...DEFAULT_SAMPLING, maxTokens: 64 },
      (ids) => prompts.decode(ids),
      generated.slice(0, half),
    );
    const next = c.sequence();
    expect(next.promptTokenIds).to.deep.equal([1, ...generated.slice(0, half)]);
    expect(next.sampling.maxTokens).to.equal(64 - half);
    const seen: TokenDelta[] = [];
    for (const id of generated.slice(half))
      c.forward({ tokenIds: [id], text: prompts.decode([id]).trim() }, (d) => seen.push(d));
    c.forward({ tokenIds: [], text: "" }, (d) => seen.push(d));
    expect(seen.flatMap((d) => d.tokenIds)).to.deep.equal(generated.slice(half));
    expect(prompts.decode(generated.slice(0, half)) + seenText(seen)).to.equal(prompts.decode(generated));
    const out = c.outcome({
      finishReason: "length",
      usage: { promptTokens: 1 + half, completionTokens: generated.length - half },
      timings: undefined,
    });
    expect(out.usage).to.deep.equal({ promptTokens: 1, completionTokens: generated.length });
  });

  it("knows when the lost worker had already streamed the whole budget", () => {
    const c = new Continuation([1], { ...DEFAULT_SAMPLING, maxTokens: 2 }, (ids) => prompts.decode(ids));
    c.forward({ tokenIds: [5, 6], text: "" }, () => undefined);
    expect(c.exhausted).to.equal(true);
    expect(c.finishedByBudget()).to.deep.include({ finishReason: "length" });
  });
});

function seenText(deltas: TokenDelta[]): string {
  return deltas.map((d) => d.text).join("");
}
