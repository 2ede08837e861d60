/**
 * Token selection: greedy (temperature 0) or temperature, top-k and top-p (nucleus) sampling with a
 * seeded generator, so equal requests with equal seeds give equal samples.
 */
import { DEFAULT_MAX_TOKENS } from "@loramesh/core";
import { InvalidArgumentError } from "@loramesh/errors";

export interface SamplingOptions {
  /** Most tokens to generate. */
  maxTokens: number;
  /** 0 = greedy. */
  temperature: number;
  /** 1 = off. */
  topP: number;
  /** 0 = off. */
  topK: number;
  /** Seed of the sampler; undefined picks one at random. */
  seed: number | undefined;
  /** Generation stops when the text ends with one of these (excluded from the output). */
  stop: string[];
  /** Generation stops after one of these ids (excluded from the output). */
  stopTokenIds: number[];
  /** Keep generating past end-of-sequence tokens. */
  ignoreEos: boolean;
  /** Tokens generated before EOS, stop ids or stop strings may end the sequence (EOS and stop ids are masked until then). */
  minTokens: number;
  /** Log-probabilities: undefined computes none; N gives each token's and its N most likely alternatives. */
  logprobs: number | undefined;
}

/** Most alternatives a token's log-probabilities may list (OpenAI's top_logprobs limit). */
export const MAX_LOGPROBS = 20;

/** A candidate token and its log-probability. */
export interface TopLogprob {
  tokenId: number;
  logprob: number;
}

/** A generated token's log-probability and the most likely tokens at its position (most likely first). */
export interface TokenLogprob extends TopLogprob {
  top: TopLogprob[];
}

export { DEFAULT_MAX_TOKENS };

/** Fills defaults and validates; throws InvalidArgumentError naming the bad field. */
export function samplingOptions(partial: Partial<SamplingOptions> = {}): SamplingOptions {
  const o: SamplingOptions = {
    maxTokens: partial.maxTokens && partial.maxTokens > 0 ? partial.maxTokens : DEFAULT_MAX_TOKENS,
    temperature: partial.temperature ?? 0,
    topP: partial.topP === undefined || partial.topP === 0 ? 1 : partial.topP,
    topK: partial.topK ?? 0,
    seed: partial.seed,
    stop: partial.stop ?? [],
    stopTokenIds: partial.stopTokenIds ?? [],
    ignoreEos: partial.ignoreEos ?? false,
    minTokens: partial.minTokens ?? 0,
    logprobs: partial.logprobs,
  };
  if (!Number.isInteger(o.maxTokens)) throw new InvalidArgumentError("max_tokens must be an integer");
  if (!(o.temperature >= 0) || !Number.isFinite(o.temperature))
    throw new InvalidArgumentError(`temperature must be >= 0, got ${o.temperature}`);
  if (!(o.topP > 0 && o.topP <= 1)) throw new InvalidArgumentError(`top_p must be in (0, 1], got ${o.topP}`);
  if (!Number.isInteger(o.topK) || o.topK < 0)
    throw new InvalidArgumentError(`top_k must be a non-negative integer, got ${o.topK}`);
  if (!Number.isInteger(o.minTokens) || o.minTokens < 0)
    throw new InvalidArgumentError(`min_tokens must be a non-negative integer, got ${o.minTokens}`);
  if (o.logprobs !== undefined && !(Number.isInteger(o.logprobs) && o.logprobs >= 0 && o.logprobs <= MAX_LOGPROBS))
    throw new InvalidArgumentError(`logprobs must be an integer in [0, ${MAX_LOGPROBS}], got ${o.logprobs}`);
  if (o.stop.some((s) => s.length === 0)) throw new InvalidArgumentError("stop strings must not be empty");
  return o;
}

/** xoshiro128** seeded through splitmix32: small, fast, reproducible. */
export class Rng {
  private s: Uint32Array;

  constructor(seed: number) {
    let x = seed >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s = Uint32Array.from([next(), next(), next(), next()]);
  }

  /** Uniform in [0, 1). */
  next(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1] as number, 5), 7), 9) >>> 0;
    const t = ((s[1] as number) << 9) >>> 0;
    s[2] = (s[2] as number) ^ (s[0] as number);
    s[3] = (s[3] as number) ^ (s[1] as number);
    s[1] = (s[1] as number) ^ s[2];
    s[0] = (s[0] as number) ^ s[3];
    s[2] = s[2] ^ t;
    s[3] = rotl(s[3], 11);
    return result / 4294967296;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** Index of the largest logit (ties: the lower index). */
export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if ((logits[i] as number) > (logits[best] as number)) best = i;
  return best;
}

/**
 * The log-softmax of the raw logits (before temperature, top-k and top-p, as vLLM reports by
 * default) at `token`, and the `top` most likely tokens (ties: the lower index).
 */
export function tokenLogprob(logits: Float32Array, token: number, top: number): TokenLogprob {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if ((logits[i] as number) > max) max = logits[i] as number;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp((logits[i] as number) - max);
  const logZ = max + Math.log(sum);
  // Partial selection: a small sorted list is cheaper than sorting the vocabulary.
  const best: number[] = [];
  for (let i = 0; i < logits.length && top > 0; i++) {
    const v = logits[i] as number;
    if (best.length === top && v <= (logits[best[top - 1] as number] as number)) continue;
    let at = best.length;
    while (at > 0 && v > (logits[best[at - 1] as number] as number)) at--;
    best.splice(at, 0, i);
    if (best.length > top) best.pop();
  }
  return {
    tokenId: token,
    logprob: (logits[token] as number) - logZ,
    top: best.map((i) => ({ tokenId: i, logprob: (logits[i] as number) - logZ })),
  };
}

export class Sampler {
  private readonly rng: Rng;

  constructor(readonly options: SamplingOptions) {
    this.rng = new Rng(options.seed ?? Math.floor(Math.random() * 2 ** 32));
  }

  sample(logits: Float32Array): number {
    const { temperature, topK, topP } = this.options;
    if (temperature === 0) return argmax(logits);
    // Candidates sorted by logit (ties: lower index), cut by top-k.
    let order = Array.from(logits.keys()).sort((a, b) => (logits[b] as number) - (logits[a] as number) || a - b);
    if (topK > 0 && topK < order.length) order = order.slice(0, topK);
    const max = logits[order[0] as number] as number;
    const weights = order.map((i) => Math.exp(((logits[i] as number) - max) / temperature));
    const total = weights.reduce((a, b) => a + b, 0);
    // Nucleus: the smallest prefix whose probability reaches top_p (at least one token).
    let keep = order.length;
    if (topP < 1) {
      let cumulative = 0;
      for (let i = 0; i < order.length; i++) {
        cumulative += (weights[i] as number) / total;
        if (cumulative >= topP) {
          keep = i + 1;
          break;
        }
      }
    }
    const kept = weights.slice(0, keep);
    const keptTotal = kept.reduce((a, b) => a + b, 0);
    let u = this.rng.next() * keptTotal;
    for (let i = 0; i < keep; i++) {
      u -= kept[i] as number;
      if (u < 0) return order[i] as number;
    }
    return order[keep - 1] as number;
  }
}
