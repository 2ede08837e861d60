/** Real model shapes by name, for checkpoints with random weights (benchmarks, start-up tests). */

export interface SynthShape {
  name: string;
  modelType: "llama" | "qwen2" | "mixtral";
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  vocabSize: number;
  ropeTheta: number;
  rmsNormEps: number;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  attentionBias: boolean;
  numExperts: number;
  expertsPerToken: number;
}

const llama = { modelType: "llama", attentionBias: false, numExperts: 0, expertsPerToken: 0 } as const;

export const SHAPES: Readonly<Record<string, SynthShape>> = {
  "tinyllama-1.1b": {
    ...llama,
    name: "tinyllama-1.1b",
    hiddenSize: 2048,
    intermediateSize: 5632,
    numLayers: 22,
    numHeads: 32,
    numKvHeads: 4,
    vocabSize: 32000,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
    maxPositionEmbeddings: 2048,
    tieWordEmbeddings: false,
  },
  /** A small shape with TinyLlama's proportions, for tests and quick checks. */
  "llama-tiny": {
    ...llama,
    name: "llama-tiny",
    hiddenSize: 256,
    intermediateSize: 704,
    numLayers: 2,
    numHeads: 8,
    numKvHeads: 2,
    vocabSize: 1024,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
    maxPositionEmbeddings: 1024,
    tieWordEmbeddings: false,
  },
  "qwen2-0.5b": {
    name: "qwen2-0.5b",
    modelType: "qwen2",
    hiddenSize: 896,
    intermediateSize: 4864,
    numLayers: 24,
    numHeads: 14,
    numKvHeads: 2,
    vocabSize: 151936,
    ropeTheta: 1000000,
    rmsNormEps: 1e-6,
    maxPositionEmbeddings: 32768,
    tieWordEmbeddings: true,
    attentionBias: true,
    numExperts: 0,
    expertsPerToken: 0,
  },
  /** Mixtral's layout (8 experts, top-2) at about 6.5 B parameters: 13 GiB as bf16. */
  "mixtral-6b": {
    name: "mixtral-6b",
    modelType: "mixtral",
    hiddenSize: 2048,
    intermediateSize: 5632,
    numLayers: 16,
    numHeads: 32,
    numKvHeads: 8,
    vocabSize: 32000,
    ropeTheta: 1000000,
    rmsNormEps: 1e-5,
    maxPositionEmbeddings: 4096,
    tieWordEmbeddings: false,
    attentionBias: false,
    numExperts: 8,
    expertsPerToken: 2,
  },
};

/** One weight tensor of the checkpoint, in Hugging Face naming and [out, in] shape. */
export interface SynthTensor {
  name: string;
  shape: number[];
  /** Uniform init half-width; 0 with `fill` set means constant. */
  range: number;
  fill?: number;
}

/** Every tensor of a shape's checkpoint, in file order (q, k, v of a layer adjacent). */
export function checkpointTensors(s: SynthShape): SynthTensor[] {
  const h = s.hiddenSize,
    hd = h / s.numHeads,
    q = s.numHeads * hd,
    kv = s.numKvHeads * hd,
    i = s.intermediateSize;
  const w = (name: string, shape: number[]): SynthTensor => ({ name, shape, range: 0.02 * Math.sqrt(3) });
  const norm = (name: string): SynthTensor => ({ name, shape: [h], range: 0, fill: 1 });
  const out: SynthTensor[] = [w("model.embed_tokens.weight", [s.vocabSize, h])];
  for (let l = 0; l < s.numLayers; l++) {
    const p = `model.layers.${l}`;
    out.push(norm(`${p}.input_layernorm.weight`));
    out.push(w(`${p}.self_attn.q_proj.weight`, [q, h]));
    out.push(w(`${p}.self_attn.k_proj.weight`, [kv, h]));
    out.push(w(`${p}.self_attn.v_proj.weight`, [kv, h]));
    if (s.attentionBias) {
      out.push(w(`${p}.self_attn.q_proj.bias`, [q]));
      out.push(w(`${p}.self_attn.k_proj.bias`, [kv]));
      out.push(w(`${p}.self_attn.v_proj.bias`, [kv]));
    }
    out.push(w(`${p}.self_attn.o_proj.weight`, [h, q]));
    out.push(norm(`${p}.post_attention_layernorm.weight`));
    if (s.numExperts > 0) {
      const moe = `${p}.block_sparse_moe`;
      out.push(w(`${moe}.gate.weight`, [s.numExperts, h]));
      for (let e = 0; e < s.numExperts; e++) {
        out.push(w(`${moe}.experts.${e}.w1.weight`, [i, h]));
        out.push(w(`${moe}.experts.${e}.w3.weight`, [i, h]));
        out.push(w(`${moe}.experts.${e}.w2.weight`, [h, i]));
      }
    } else {
      out.push(w(`${p}.mlp.gate_proj.weight`, [i, h]));
      out.push(w(`${p}.mlp.up_proj.weight`, [i, h]));
      out.push(w(`${p}.mlp.down_proj.weight`, [h, i]));
    }
  }
  out.push(norm("model.norm.weight"));
  if (!s.tieWordEmbeddings) out.push(w("lm_head.weight", [s.vocabSize, h]));
  return out;
}

/** Hugging Face config.json for a shape. */
export function hfConfig(s: SynthShape, torchDtype: string): Record<string, unknown> {
  const arch = { llama: "LlamaForCausalLM", qwen2: "Qwen2ForCausalLM", mixtral: "MixtralForCausalLM" }[s.modelType];
  return {
    architectures: [arch],
    model_type: s.modelType,
    hidden_size: s.hiddenSize,
    intermediate_size: s.intermediateSize,
    num_hidden_layers: s.numLayers,
    num_attention_heads: s.numHeads,
    num_key_value_heads: s.numKvHeads,
    vocab_size: s.vocabSize,
    rope_theta: s.ropeTheta,
    rms_norm_eps: s.rmsNormEps,
    max_position_embeddings: s.maxPositionEmbeddings,
    tie_word_embeddings: s.tieWordEmbeddings,
    hidden_act: "silu",
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: torchDtype,
    ...(s.modelType === "llama" ? { attention_bias: s.attentionBias } : {}),
    ...(s.numExperts > 0 ? { num_local_experts: s.numExperts, num_experts_per_tok: s.expertsPerToken } : {}),
  };
}
