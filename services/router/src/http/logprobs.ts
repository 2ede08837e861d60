/** Log-probabilities in OpenAI's two shapes: the legacy completions lists and chat's `content` entries. */
import type { TokenLogprob } from "../domain/types";

type TokenText = (id: number) => string;

/** JSON has no -Infinity (a token masked by min_tokens); vLLM reports such tokens as -9999. */
const finite = (logprob: number): number => Math.max(logprob, -9999);

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[];
  text_offset: number[];
}

/** Completions' `logprobs`; `offset` is where the first token's text starts in the choice's text. */
export function completionLogprobs(lps: TokenLogprob[], text: TokenText, offset = 0): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  for (const lp of lps) {
    const token = text(lp.tokenId);
    out.tokens.push(token);
    out.token_logprobs.push(finite(lp.logprob));
    out.top_logprobs.push(Object.fromEntries(lp.top.map((t) => [text(t.tokenId), finite(t.logprob)])));
    out.text_offset.push(offset);
    offset += token.length;
  }
  return out;
}

const entry = (id: number, logprob: number, text: TokenText): { token: string; logprob: number; bytes: number[] } => {
  const token = text(id);
  return { token, logprob: finite(logprob), bytes: [...Buffer.from(token, "utf8")] };
};

/** Chat's `logprobs.content`. */
export function chatLogprobs(lps: TokenLogprob[], text: TokenText): object[] {
  return lps.map((lp) => ({
    ...entry(lp.tokenId, lp.logprob, text),
    top_logprobs: lp.top.map((t) => entry(t.tokenId, t.logprob, text)),
  }));
}
