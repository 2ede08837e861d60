import { expect } from "chai";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GOLDEN_DIR } from "@loramesh/testing";
import { Tokenizer } from "./tokenizer";

const LLAMA = join(GOLDEN_DIR, "models", "tiny-llama");

/** A deterministic token stream (xorshift) over the whole vocabulary, split UTF-8 bytes included. */
function tokens(seed: number, n: number, vocab: number): number[] {
  let x = seed;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.push((x >>> 0) % vocab);
  }
  return out;
}

/**
 * Streams `ids` one token at a time and checks every step against decoding the whole sequence
 * each time (what the decoder did before it decoded a window): the same text, the same deltas.
 */
function expectStreamsLikeWholeDecode(tok: Tokenizer, ids: number[]): void {
  const dec = tok.incremental();
  let emitted = 0;
  for (let i = 0; i < ids.length; i++) {
    const delta = dec.push([ids[i] as number]);
    const whole = tok.decode(ids.slice(0, i + 1));
    expect(dec.fullText, `fullText after ${i + 1} tokens`).to.equal(whole);
    const expected = whole.endsWith("\uFFFD") ? "" : whole.slice(emitted);
    if (!whole.endsWith("\uFFFD")) emitted = whole.length;
    expect(delta, `delta of token ${i + 1}`).to.equal(expected);
  }
  expect(dec.flush()).to.equal(tok.decode(ids).slice(emitted));
}

describe("tokenizer: incremental detokenization decodes a window, yet streams the whole text", function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "loramesh-tokenizer-"));
    cpSync(LLAMA, dir, { recursive: true });
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("matches decoding all tokens after every push (byte-level BPE, split characters)", () => {
    const tok = Tokenizer.load(LLAMA, []);
    for (const seed of [1, 7, 42, 1234]) expectStreamsLikeWholeDecode(tok, tokens(seed, 200, 512));
    const text = "Grüße, 世界! naïve café — ünïcödé ✓ done.";
    expectStreamsLikeWholeDecode(tok, tok.encode(text, false));
  });

  it("matches it with a decoder that strips the first leading space (the window keeps context)", () => {
    const path = join(dir, "tokenizer.json");
    const json = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
    json["decoder"] = {
      type: "Sequence",
      decoders: [json["decoder"], { type: "Strip", content: " ", start: 1, stop: 0 }],
    };
    writeFileSync(path, JSON.stringify(json));
    const tok = Tokenizer.load(dir, []);
    const ids = tok.encode(" a b  c d. e , f", false);
    expect(tok.decode(ids).startsWith(" ")).to.equal(false);
    expectStreamsLikeWholeDecode(tok, ids);
    expectStreamsLikeWholeDecode(tok, tokens(3, 150, 512));
  });

  it("matches it when clean-up rewrites across the window's seam (falls back to the whole text)", () => {
    const path = join(dir, "tokenizer_config.json");
    const config = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
    writeFileSync(path, JSON.stringify({ ...config, clean_up_tokenization_spaces: true }));
    const tok = Tokenizer.load(dir, []);
    const ids = tok.encode("a . b , c ' d n't e ? f !", false);
    expect(tok.decode(ids)).to.not.equal(Tokenizer.load(LLAMA, []).decode(ids));
    expectStreamsLikeWholeDecode(tok, ids);
    expectStreamsLikeWholeDecode(tok, tokens(5, 150, 512));
  });
});
