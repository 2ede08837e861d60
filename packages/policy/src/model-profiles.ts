/**
 * Real model shapes for the GPU simulator (public model configs), and what follows from them: bf16
 * weight bytes, KV bytes per token, and LoRA adapter bytes from the rank and target modules (expert
 * LoRA included: one A/B pair per expert per projection, as InfiniLoRA's MoE adapters have).
 */

export interface ModelProfile {
  name: string;
  layers: number;
  hidden: number;
  /** Query heads, KV heads and head size (attention projections and the KV cache). */
  heads: number;
  kvHeads: number;
  headDim: number;
  /** FFN width of one expert (of the dense MLP when experts = 1). */
  ffn: number;
  experts: number;
  /** Experts each token is routed to. */
  topK: number;
  vocab: number;
  /** GPUs one serving instance spans (tensor parallel), so that bf16 weights fit with KV room. */
  gpusPerInstance: number;
}

const profile = (p: ModelProfile): ModelProfile => p;

/** The papers' models (InfiniLoRA: four MoE models; LoRAServe: a dense Llama). */
export const MODEL_PROFILES: Readonly<Record<string, ModelProfile>> = {
  "mixtral-8x7b": profile({
    name: "mixtral-8x7b",
    layers: 32,
    hidden: 4096,
    heads: 32,
    kvHeads: 8,
    headDim: 128,
    ffn: 14336,
    experts: 8,
    topK: 2,
    vocab: 32000,
    gpusPerInstance: 2,
  }),
  "qwen3-30b-a3b": profile({
    name: "qwen3-30b-a3b",
    layers: 48,
    hidden: 2048,
    heads: 32,
    kvHeads: 4,
    headDim: 128,
    ffn: 768,
    experts: 128,
    topK: 8,
    vocab: 151936,
    gpusPerInstance: 1,
  }),
  "gpt-oss-20b": profile({
    name: "gpt-oss-20b",
    layers: 24,
    hidden: 2880,
    heads: 64,
    kvHeads: 8,
    headDim: 64,
    ffn: 2880,
    experts: 32,
    topK: 4,
    vocab: 201088,
    gpusPerInstance: 1,
  }),
  dbrx: profile({
    name: "dbrx",
    layers: 40,
    hidden: 6144,
    heads: 48,
    kvHeads: 8,
    headDim: 128,
    ffn: 10752,
    experts: 16,
    topK: 4,
    vocab: 100352,
    gpusPerInstance: 4,
  }),
  "llama-3-8b": profile({
    name: "llama-3-8b",
    layers: 32,
    hidden: 4096,
    heads: 32,
    kvHeads: 8,
    headDim: 128,
    ffn: 14336,
    experts: 1,
    topK: 1,
    vocab: 128256,
    gpusPerInstance: 1,
  }),
};

export const MODEL_PROFILE_NAMES = Object.keys(MODEL_PROFILES);

const BF16 = 2;

/** Parameters of the attention projections of one layer (q, k, v, o). */
function attentionParams(m: ModelProfile): number {
  const q = m.heads * m.headDim;
  const kv = m.kvHeads * m.headDim;
  return m.hidden * q + 2 * m.hidden * kv + q * m.hidden;
}

/** Parameters of one expert (gate, up, down). */
function expertParams(m: ModelProfile): number {
  return 3 * m.hidden * m.ffn;
}

/** Weights every token touches: embeddings, attention, router, norms. */
export function sharedParams(m: ModelProfile): number {
  return 2 * m.vocab * m.hidden + m.layers * (attentionParams(m) + m.hidden * m.experts + 2 * m.hidden);
}

export function totalParams(m: ModelProfile): number {
  return sharedParams(m) + m.layers * m.experts * expertParams(m);
}

export function activeParams(m: ModelProfile): number {
  return sharedParams(m) + m.layers * m.topK * expertParams(m);
}

export const weightBytes = (m: ModelProfile): number => totalParams(m) * BF16;
export const expertBytes = (m: ModelProfile): number => expertParams(m) * BF16;

/** KV cache bytes per token (K and V of every layer, bf16). */
export function kvBytesPerToken(m: ModelProfile): number {
  return 2 * m.layers * m.kvHeads * m.headDim * BF16;
}

export type LoraTargets = "attention" | "attention+experts";

/** Per unit of rank: bytes of the attention LoRA of one layer (A and B of q, k, v, o). */
function attentionLoraPerRank(m: ModelProfile): number {
  const q = m.heads * m.headDim;
  const kv = m.kvHeads * m.headDim;
  return BF16 * (m.hidden + q + 2 * (m.hidden + kv) + (q + m.hidden));
}

/** Per unit of rank: bytes of the LoRA of one expert of one layer (gate, up, down). */
export function expertLoraPerRank(m: ModelProfile): number {
  return BF16 * 3 * (m.hidden + m.ffn);
}

/** Bytes of one adapter at `rank` (bf16, true-rank storage). */
export function adapterBytes(m: ModelProfile, rank: number, targets: LoraTargets = "attention+experts"): number {
  const perLayer = attentionLoraPerRank(m) + (targets === "attention+experts" ? m.experts * expertLoraPerRank(m) : 0);
  return rank * m.layers * perLayer;
}

/**
 * Per token and unit of rank: bytes a gathered (padded, per-token) LoRA kernel reads: the attention
 * LoRA plus the LoRA of the token's top-k experts, in every layer.
 */
export function loraBytesPerTokenRank(m: ModelProfile, targets: LoraTargets = "attention+experts"): number {
  return m.layers * (attentionLoraPerRank(m) + (targets === "attention+experts" ? m.topK * expertLoraPerRank(m) : 0));
}

/** Expected distinct experts a batch of `tokens` touches in one layer (uniform routing). */
export function expertsTouched(m: ModelProfile, tokens: number): number {
  if (m.experts === 1) return tokens > 0 ? 1 : 0;
  return m.experts * (1 - Math.pow(1 - m.topK / m.experts, tokens));
}

export function modelProfile(name: string): ModelProfile {
  const p = MODEL_PROFILES[name];
  if (!p) throw new RangeError(`unknown model profile ${JSON.stringify(name)}; use ${MODEL_PROFILE_NAMES.join(", ")}`);
  return p;
}
