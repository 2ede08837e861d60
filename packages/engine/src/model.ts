/**
 * Base-model weights in the layout the forward pass uses: q/k/v stacked into one matrix (one
 * matmul, one LoRA call with three slices), gate/up stacked likewise, per-expert matrices for MoE.
 * Weights are held as f32 (F16/BF16 checkpoints are converted exactly).
 */
import { f32, native, type Tensor } from "@loramesh/native";
import { Checkpoint } from "./checkpoint";
import { loadModelConfig, type ModelConfig, SafetensorsError } from "@loramesh/formats";

type F32 = Tensor<"f32">;

export interface DenseMlp {
  kind: "dense";
  gateUp: F32; // [2I, H]: gate rows then up rows
  down: F32; // [H, I]
}

export interface MoeMlp {
  kind: "moe";
  router: F32; // [E, H]
  experts: Array<{ gateUp: F32; down: F32 }>; // w1;w3 stacked [2I, H], w2 [H, I]
}

export interface LayerWeights {
  inputNorm: F32;
  postNorm: F32;
  qkv: F32; // [qDim + 2·kvDim, H]
  qkvBias: F32 | null;
  o: F32; // [H, qDim]
  mlp: DenseMlp | MoeMlp;
}

export class Model {
  private constructor(
    readonly dir: string,
    readonly config: ModelConfig,
    readonly embed: F32,
    readonly layers: LayerWeights[],
    readonly finalNorm: F32,
    readonly lmHead: F32,
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

  /** Bytes of weights held. */
  get sizeBytes(): number {
    let n =
      this.embed.data.length + this.finalNorm.data.length + (this.lmHead === this.embed ? 0 : this.lmHead.data.length);
    for (const l of this.layers) {
      n +=
        l.inputNorm.data.length +
        l.postNorm.data.length +
        l.qkv.data.length +
        l.o.data.length +
        (l.qkvBias?.data.length ?? 0);
      if (l.mlp.kind === "dense") n += l.mlp.gateUp.data.length + l.mlp.down.data.length;
      else
        n +=
          l.mlp.router.data.length + l.mlp.experts.reduce((s, e) => s + e.gateUp.data.length + e.down.data.length, 0);
    }
    return n * 4;
  }

  static load(dir: string): Model {
    const config = loadModelConfig(dir);
    const ckpt = Checkpoint.open(dir);
    try {
      const { hiddenSize: h, intermediateSize: i, vocabSize: vocab, headDim } = config;
      const q = config.numHeads * headDim,
        kv = config.numKvHeads * headDim;
      const embed = f32([vocab, h], ckpt.read("model.embed_tokens.weight", [vocab, h]));
      const layers: LayerWeights[] = [];
      for (let l = 0; l < config.numLayers; l++) {
        const p = `model.layers.${l}`;
        const qkv = stack([
          ckpt.read(`${p}.self_attn.q_proj.weight`, [q, h]),
          ckpt.read(`${p}.self_attn.k_proj.weight`, [kv, h]),
          ckpt.read(`${p}.self_attn.v_proj.weight`, [kv, h]),
        ]);
        let qkvBias: F32 | null = null;
        if (config.attentionBias) {
          qkvBias = f32(
            [q + 2 * kv],
            stack([
              ckpt.read(`${p}.self_attn.q_proj.bias`, [q]),
              ckpt.read(`${p}.self_attn.k_proj.bias`, [kv]),
              ckpt.read(`${p}.self_attn.v_proj.bias`, [kv]),
            ]),
          );
        }
        let mlp: DenseMlp | MoeMlp;
        if (config.numExperts > 0) {
          const moe = `${p}.block_sparse_moe`;
          mlp = {
            kind: "moe",
            router: f32([config.numExperts, h], ckpt.read(`${moe}.gate.weight`, [config.numExperts, h])),
            experts: Array.from({ length: config.numExperts }, (_, e) => ({
              gateUp: f32(
                [2 * i, h],
                stack([
                  ckpt.read(`${moe}.experts.${e}.w1.weight`, [i, h]),
                  ckpt.read(`${moe}.experts.${e}.w3.weight`, [i, h]),
                ]),
              ),
              down: f32([h, i], ckpt.read(`${moe}.experts.${e}.w2.weight`, [h, i])),
            })),
          };
        } else {
          mlp = {
            kind: "dense",
            gateUp: f32(
              [2 * i, h],
              stack([ckpt.read(`${p}.mlp.gate_proj.weight`, [i, h]), ckpt.read(`${p}.mlp.up_proj.weight`, [i, h])]),
            ),
            down: f32([h, i], ckpt.read(`${p}.mlp.down_proj.weight`, [h, i])),
          };
        }
        layers.push({
          inputNorm: f32([h], ckpt.read(`${p}.input_layernorm.weight`, [h])),
          postNorm: f32([h], ckpt.read(`${p}.post_attention_layernorm.weight`, [h])),
          qkv: f32([q + 2 * kv, h], qkv),
          qkvBias,
          o: f32([h, q], ckpt.read(`${p}.self_attn.o_proj.weight`, [h, q])),
          mlp,
        });
      }
      const finalNorm = f32([h], ckpt.read("model.norm.weight", [h]));
      let lmHead = embed;
      if (!config.tieWordEmbeddings) {
        if (!ckpt.has("lm_head.weight"))
          throw new SafetensorsError("the checkpoint has no lm_head.weight and tie_word_embeddings is false");
        lmHead = f32([vocab, h], ckpt.read("lm_head.weight", [vocab, h]));
      }
      const { invFreq, attentionScaling } = native.ropeInvFreq(config.rope, 0);
      return new Model(dir, config, embed, layers, finalNorm, lmHead, invFreq, attentionScaling);
    } finally {
      ckpt.close();
    }
  }
}

function stack(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}
