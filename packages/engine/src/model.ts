/**
 * Base-model weights in the layout the forward pass uses: q/k/v stacked into one matrix (one
 * matmul, one LoRA call with three slices), gate/up stacked likewise, per-expert matrices for MoE.
 * Weights are held in the checkpoint's precision (BF16 as bf16, F32 as f32; F16 widened to f32),
 * mapped from the file rather than read (see weights.ts); the kernels accumulate in f32.
 */
import { native, type Tensor } from "@loramesh/native";
import { Checkpoint } from "./checkpoint";
import { loadModelConfig, type ModelConfig, SafetensorsError } from "@loramesh/formats";
import { WeightLoader, type Weight } from "./weights";

type F32 = Tensor<"f32">;
type W = Weight;

export interface DenseMlp {
  kind: "dense";
  gateUp: W; // [2I, H]: gate rows then up rows
  down: W; // [H, I]
}

export interface MoeMlp {
  kind: "moe";
  router: W; // [E, H]
  experts: Array<{ gateUp: W; down: W }>; // w1;w3 stacked [2I, H], w2 [H, I]
}

export interface LayerWeights {
  inputNorm: W;
  postNorm: W;
  qkv: W; // [qDim + 2·kvDim, H]
  qkvBias: F32 | null;
  o: W; // [H, qDim]
  mlp: DenseMlp | MoeMlp;
}

export class Model {
  private constructor(
    readonly dir: string,
    readonly config: ModelConfig,
    readonly embed: W,
    readonly layers: LayerWeights[],
    readonly finalNorm: W,
    readonly lmHead: W,
    /** Rotary frequencies for non-dynamic rope (dynamic recomputes per batch). */
    readonly invFreq: Float32Array,
    readonly attentionScaling: number,
  ) {}

  get qDim(): number {
    return this.config.numHeads * this.config.headDim;
  }
  get kvDim(): number {
    return this.config.numKvHeads * this.config.headDim;
  }

  /** Bytes of weights held (in their own precision). */
  get sizeBytes(): number {
    const b = (t: Tensor) => t.data.byteLength;
    let n = b(this.embed) + b(this.finalNorm) + (this.lmHead === this.embed ? 0 : b(this.lmHead));
    for (const l of this.layers) {
      n += b(l.inputNorm) + b(l.postNorm) + b(l.qkv) + b(l.o) + (l.qkvBias ? b(l.qkvBias) : 0);
      if (l.mlp.kind === "dense") n += b(l.mlp.gateUp) + b(l.mlp.down);
      else n += b(l.mlp.router) + l.mlp.experts.reduce((s, e) => s + b(e.gateUp) + b(e.down), 0);
    }
    return n;
  }

  static load(dir: string): Model {
    const config = loadModelConfig(dir);
    const ckpt = Checkpoint.open(dir);
    try {
      const w = new WeightLoader(ckpt);
      const { hiddenSize: h, vocabSize: vocab } = config;
      const embed = w.one("model.embed_tokens.weight", [vocab, h]);
      const layers = Array.from({ length: config.numLayers }, (_, l) => loadLayer(w, config, l));
      const finalNorm = w.one("model.norm.weight", [h]);
      let lmHead = embed;
      if (!config.tieWordEmbeddings) {
        if (!ckpt.has("lm_head.weight"))
          throw new SafetensorsError("the checkpoint has no lm_head.weight and tie_word_embeddings is false");
        lmHead = w.one("lm_head.weight", [vocab, h]);
      }
      const { invFreq, attentionScaling } = native.ropeInvFreq(config.rope, 0);
      return new Model(dir, config, embed, layers, finalNorm, lmHead, invFreq, attentionScaling);
    } finally {
      ckpt.close();
    }
  }
}

function loadLayer(w: WeightLoader, config: ModelConfig, l: number): LayerWeights {
  const { hiddenSize: h, intermediateSize: i, headDim } = config;
  const q = config.numHeads * headDim,
    kv = config.numKvHeads * headDim;
  const p = `model.layers.${l}`;
  const a = `${p}.self_attn`;
  const qkv = w.stacked(
    [
      [`${a}.q_proj.weight`, [q, h]],
      [`${a}.k_proj.weight`, [kv, h]],
      [`${a}.v_proj.weight`, [kv, h]],
    ],
    [q + 2 * kv, h],
  );
  const qkvBias = config.attentionBias
    ? w.f32(
        [
          [`${a}.q_proj.bias`, [q]],
          [`${a}.k_proj.bias`, [kv]],
          [`${a}.v_proj.bias`, [kv]],
        ],
        [q + 2 * kv],
      )
    : null;
  let mlp: DenseMlp | MoeMlp;
  if (config.numExperts > 0) {
    const moe = `${p}.block_sparse_moe`;
    mlp = {
      kind: "moe",
      router: w.one(`${moe}.gate.weight`, [config.numExperts, h]),
      experts: Array.from({ length: config.numExperts }, (_, e) => ({
        gateUp: w.stacked(
          [
            [`${moe}.experts.${e}.w1.weight`, [i, h]],
            [`${moe}.experts.${e}.w3.weight`, [i, h]],
          ],
          [2 * i, h],
        ),
        down: w.one(`${moe}.experts.${e}.w2.weight`, [h, i]),
      })),
    };
  } else {
    mlp = {
      kind: "dense",
      gateUp: w.stacked(
        [
          [`${p}.mlp.gate_proj.weight`, [i, h]],
          [`${p}.mlp.up_proj.weight`, [i, h]],
        ],
        [2 * i, h],
      ),
      down: w.one(`${p}.mlp.down_proj.weight`, [h, i]),
    };
  }
  return {
    inputNorm: w.one(`${p}.input_layernorm.weight`, [h]),
    postNorm: w.one(`${p}.post_attention_layernorm.weight`, [h]),
    qkv,
    qkvBias,
    o: w.one(`${a}.o_proj.weight`, [h, q]),
    mlp,
  };
}
