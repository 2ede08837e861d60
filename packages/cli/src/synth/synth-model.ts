/**
 * Writes a real-shaped checkpoint with random weights: Hugging Face safetensors (f32, bf16 or f16)
 * with config and tokenizer, PEFT adapters of chosen ranks and targets, and the same weights as GGUF
 * (F32/F16, q/k rows permuted as llama.cpp's converter does) plus GGUF LoRA adapters, so llama.cpp
 * runs exactly the model loramesh runs.
 */
import { existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { InvalidArgumentError } from "@loramesh/errors";
import { GgufWriter, type GgmlType, type GgufTensorSpec, type GgufValue } from "./gguf-writer";
import { tensorValues, toBf16Bits, toF16Bits } from "./random-weights";
import { SafetensorsWriter, type StDtype } from "./safetensors-writer";
import { SHAPES, checkpointTensors, hfConfig, type SynthShape, type SynthTensor } from "./shapes";
import { buildVocab, ggufTokenizerMetadata, hfTokenizerJson } from "./vocab";

export type SynthDtype = "f32" | "bf16" | "f16";
export const LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;
export type LoraTarget = (typeof LORA_TARGETS)[number];

export interface SynthAdapterSpec {
  name: string;
  rank: number;
  targets: readonly LoraTarget[];
}

export function shapeByName(name: string): SynthShape {
  const s = SHAPES[name];
  if (!s)
    throw new InvalidArgumentError(`unknown shape ${JSON.stringify(name)}; known: ${Object.keys(SHAPES).join(", ")}`);
  return s;
}

const ST_DTYPE: Record<SynthDtype, StDtype> = { f32: "F32", bf16: "BF16", f16: "F16" };
const TORCH_DTYPE: Record<SynthDtype, string> = { f32: "float32", bf16: "bfloat16", f16: "float16" };

function encode(values: Float32Array, dtype: SynthDtype | GgmlType): ArrayBufferView {
  if (dtype === "f32" || dtype === "F32") return values;
  return dtype === "bf16" ? toBf16Bits(values) : toF16Bits(values);
}

const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const values = (seed: number, t: SynthTensor) => tensorValues(seed, t.name, count(t.shape), t.range, t.fill);

/** A Hugging Face model directory: config.json, model.safetensors, tokenizer files. */
export function writeHfModel(dir: string, shape: SynthShape, dtype: SynthDtype, seed = 1): void {
  mkdirSync(dir, { recursive: true });
  const tensors = checkpointTensors(shape);
  const writer = new SafetensorsWriter(
    join(dir, "model.safetensors"),
    tensors.map((t) => ({ name: t.name, shape: t.shape, dtype: ST_DTYPE[dtype] })),
  );
  for (const t of tensors) writer.write(t.name, encode(values(seed, t), dtype));
  writer.close();
  writeFileSync(join(dir, "config.json"), JSON.stringify(hfConfig(shape, TORCH_DTYPE[dtype]), null, 2));
  writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ bos_token_id: 1, eos_token_id: 2 }));
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(hfTokenizerJson(buildVocab(shape.vocabSize))));
  writeFileSync(
    join(dir, "tokenizer_config.json"),
    JSON.stringify({
      tokenizer_class: "LlamaTokenizerFast",
      bos_token: "<s>",
      eos_token: "</s>",
      unk_token: "<unk>",
      add_bos_token: true,
    }),
  );
}

interface LoraModule {
  layer: number;
  target: LoraTarget;
  inFeatures: number;
  outFeatures: number;
}

function loraModules(shape: SynthShape, targets: readonly LoraTarget[]): LoraModule[] {
  if (shape.numExperts > 0 && targets.some((t) => t === "gate_proj" || t === "up_proj" || t === "down_proj")) {
    throw new InvalidArgumentError("synthetic MoE adapters support attention targets only");
  }
  const h = shape.hiddenSize,
    hd = h / shape.numHeads,
    i = shape.intermediateSize;
  const dims: Record<LoraTarget, [number, number]> = {
    q_proj: [h, shape.numHeads * hd],
    k_proj: [h, shape.numKvHeads * hd],
    v_proj: [h, shape.numKvHeads * hd],
    o_proj: [shape.numHeads * hd, h],
    gate_proj: [h, i],
    up_proj: [h, i],
    down_proj: [i, h],
  };
  const out: LoraModule[] = [];
  for (let layer = 0; layer < shape.numLayers; layer++) {
    for (const target of LORA_TARGETS) {
      if (!targets.includes(target)) continue;
      const [inFeatures, outFeatures] = dims[target];
      out.push({ layer, target, inFeatures, outFeatures });
    }
  }
  return out;
}

const ATTENTION_TARGETS: readonly LoraTarget[] = ["q_proj", "k_proj", "v_proj", "o_proj"];
const modulePath = (m: LoraModule) =>
  `model.layers.${m.layer}.${ATTENTION_TARGETS.includes(m.target) ? "self_attn" : "mlp"}.${m.target}`;

function loraTensors(seed: number, adapter: SynthAdapterSpec, m: LoraModule): { a: Float32Array; b: Float32Array } {
  const r = adapter.rank;
  const key = `${adapter.name}/${modulePath(m)}`;
  return {
    a: tensorValues(seed, `${key}.A`, r * m.inFeatures, Math.sqrt(3 / m.inFeatures)),
    b: tensorValues(seed, `${key}.B`, m.outFeatures * r, (0.045 * Math.sqrt(3)) / Math.sqrt(r)),
  };
}

/** A PEFT adapter directory (alpha = 2·rank). */
export function writePeftAdapter(
  dir: string,
  shape: SynthShape,
  spec: SynthAdapterSpec,
  dtype: SynthDtype,
  seed = 1,
): void {
  mkdirSync(dir, { recursive: true });
  const modules = loraModules(shape, spec.targets);
  const st = ST_DTYPE[dtype];
  const specs = modules.flatMap((m) => [
    { name: `base_model.model.${modulePath(m)}.lora_A.weight`, shape: [spec.rank, m.inFeatures], dtype: st },
    { name: `base_model.model.${modulePath(m)}.lora_B.weight`, shape: [m.outFeatures, spec.rank], dtype: st },
  ]);
  const writer = new SafetensorsWriter(join(dir, "adapter_model.safetensors"), specs);
  for (const m of modules) {
    const { a, b } = loraTensors(seed, spec, m);
    writer.write(`base_model.model.${modulePath(m)}.lora_A.weight`, encode(a, dtype));
    writer.write(`base_model.model.${modulePath(m)}.lora_B.weight`, encode(b, dtype));
  }
  writer.close();
  writeFileSync(
    join(dir, "adapter_config.json"),
    JSON.stringify(
      {
        peft_type: "LORA",
        task_type: "CAUSAL_LM",
        base_model_name_or_path: shape.name,
        r: spec.rank,
        lora_alpha: 2 * spec.rank,
        lora_dropout: 0,
        bias: "none",
        fan_in_fan_out: false,
        use_rslora: false,
        inference_mode: true,
        target_modules: [...spec.targets],
      },
      null,
      2,
    ),
  );
}

/** Rows of a q/k projection reordered as llama.cpp's converter does (rotate-half to interleaved). */
export function permuteRows(w: Float32Array, rows: number, cols: number, heads: number): Float32Array {
  const hd = rows / heads,
    half = hd / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let i2 = 0; i2 < 2; i2++) {
      for (let j = 0; j < half; j++) {
        const from = (h * hd + i2 * half + j) * cols,
          to = (h * hd + j * 2 + i2) * cols;
        out.set(w.subarray(from, from + cols), to);
      }
    }
  }
  return out;
}

const GGUF_NAMES: Record<string, string> = {
  "self_attn.q_proj": "attn_q",
  "self_attn.k_proj": "attn_k",
  "self_attn.v_proj": "attn_v",
  "self_attn.o_proj": "attn_output",
  "mlp.gate_proj": "ffn_gate",
  "mlp.up_proj": "ffn_up",
  "mlp.down_proj": "ffn_down",
  input_layernorm: "attn_norm",
  post_attention_layernorm: "ffn_norm",
};

function ggufName(hf: string): string {
  if (hf === "model.embed_tokens.weight") return "token_embd.weight";
  if (hf === "model.norm.weight") return "output_norm.weight";
  if (hf === "lm_head.weight") return "output.weight";
  const m = /^model\.layers\.(\d+)\.(.+)\.weight$/.exec(hf);
  const mapped = m ? GGUF_NAMES[m[2] as string] : undefined;
  if (!m || !mapped) throw new InvalidArgumentError(`no GGUF name for ${hf}`);
  return `blk.${m[1]}.${mapped}.weight`;
}

function requireLlama(shape: SynthShape): void {
  if (shape.modelType !== "llama")
    throw new InvalidArgumentError(`GGUF output is written for llama shapes only, not ${shape.modelType}`);
}

function ggufArchMetadata(shape: SynthShape): Array<[string, GgufValue]> {
  const hd = shape.hiddenSize / shape.numHeads;
  return [
    ["general.architecture", { type: "string", value: "llama" }],
    ["llama.context_length", { type: "u32", value: shape.maxPositionEmbeddings }],
    ["llama.embedding_length", { type: "u32", value: shape.hiddenSize }],
    ["llama.block_count", { type: "u32", value: shape.numLayers }],
    ["llama.feed_forward_length", { type: "u32", value: shape.intermediateSize }],
    ["llama.rope.dimension_count", { type: "u32", value: hd }],
    ["llama.attention.head_count", { type: "u32", value: shape.numHeads }],
    ["llama.attention.head_count_kv", { type: "u32", value: shape.numKvHeads }],
    ["llama.attention.layer_norm_rms_epsilon", { type: "f32", value: shape.rmsNormEps }],
    ["llama.rope.freq_base", { type: "f32", value: shape.ropeTheta }],
    ["llama.vocab_size", { type: "u32", value: shape.vocabSize }],
  ];
}

/** The checkpoint as one GGUF file (1-D tensors stay F32, as llama.cpp's converter keeps them). */
export function writeGgufModel(path: string, shape: SynthShape, type: GgmlType, seed = 1): void {
  requireLlama(shape);
  const tensors = checkpointTensors(shape);
  const specs: GgufTensorSpec[] = tensors.map((t) => ({
    name: ggufName(t.name),
    shape: t.shape,
    type: t.shape.length === 1 ? "F32" : type,
  }));
  const metadata: Array<[string, GgufValue]> = [
    ...ggufArchMetadata(shape),
    ["general.name", { type: "string", value: shape.name }],
    ["general.file_type", { type: "u32", value: type === "F32" ? 0 : 1 }],
    ...ggufTokenizerMetadata(buildVocab(shape.vocabSize)),
  ];
  const writer = new GgufWriter(path, metadata, specs);
  tensors.forEach((t, i) => {
    const spec = specs[i] as GgufTensorSpec;
    let v = values(seed, t);
    if (t.name.endsWith("q_proj.weight"))
      v = permuteRows(v, t.shape[0] as number, t.shape[1] as number, shape.numHeads);
    if (t.name.endsWith("k_proj.weight"))
      v = permuteRows(v, t.shape[0] as number, t.shape[1] as number, shape.numKvHeads);
    writer.write(spec.name, encode(v, spec.type));
  });
  writer.close();
}

/** The adapter as a GGUF LoRA (lora_b of q/k permuted like the base rows; alpha = 2·rank). */
export function writeGgufLora(path: string, shape: SynthShape, spec: SynthAdapterSpec, type: GgmlType, seed = 1): void {
  requireLlama(shape);
  const modules = loraModules(shape, spec.targets);
  const name = (m: LoraModule, ab: "a" | "b") => `${ggufName(`${modulePath(m)}.weight`)}.lora_${ab}`;
  const specs: GgufTensorSpec[] = modules.flatMap((m) => [
    { name: name(m, "a"), shape: [spec.rank, m.inFeatures], type },
    { name: name(m, "b"), shape: [m.outFeatures, spec.rank], type },
  ]);
  const metadata: Array<[string, GgufValue]> = [
    ...ggufArchMetadata(shape),
    ["general.type", { type: "string", value: "adapter" }],
    ["adapter.type", { type: "string", value: "lora" }],
    ["adapter.lora.alpha", { type: "f32", value: 2 * spec.rank }],
  ];
  const writer = new GgufWriter(path, metadata, specs);
  for (const m of modules) {
    const { a } = loraTensors(seed, spec, m);
    let { b } = loraTensors(seed, spec, m);
    if (m.target === "q_proj") b = permuteRows(b, m.outFeatures, spec.rank, shape.numHeads);
    if (m.target === "k_proj") b = permuteRows(b, m.outFeatures, spec.rank, shape.numKvHeads);
    writer.write(name(m, "a"), encode(a, type));
    writer.write(name(m, "b"), encode(b, type));
  }
  writer.close();
}

export interface SynthOptions {
  shape: SynthShape;
  dtype: SynthDtype;
  adapters: readonly SynthAdapterSpec[];
  /** GGUF files to write beside the checkpoint (llama shapes). */
  gguf: readonly GgmlType[];
  seed?: number;
  /** Called before each file is written. */
  onFile?: (path: string) => void;
}

/**
 * Writes `out/model` (Hugging Face), `out/adapters/NAME` (PEFT), and for each GGUF type
 * `out/model-TYPE.gguf` and `out/adapters/NAME-TYPE.gguf`. Files already present are kept.
 */
export function synthModel(out: string, o: SynthOptions): void {
  const seed = o.seed ?? 1;
  const step = (path: string, write: () => void) => {
    if (existsSync(path)) return;
    o.onFile?.(path);
    write();
  };
  step(join(out, "model", "config.json"), () => writeHfModel(join(out, "model"), o.shape, o.dtype, seed));
  for (const a of o.adapters) {
    step(join(out, "adapters", a.name, "adapter_config.json"), () =>
      writePeftAdapter(join(out, "adapters", a.name), o.shape, a, o.dtype, seed),
    );
  }
  for (const type of o.gguf) {
    // Written under a temporary name: an interrupted run leaves no file that looks complete.
    const gguf = (path: string, write: (p: string) => void) =>
      step(path, () => {
        write(`${path}.partial`);
        renameSync(`${path}.partial`, path);
      });
    gguf(join(out, `model-${type}.gguf`), (p) => writeGgufModel(p, o.shape, type, seed));
    for (const a of o.adapters) {
      mkdirSync(join(out, "adapters"), { recursive: true });
      gguf(join(out, "adapters", `${a.name}-${type}.gguf`), (p) => writeGgufLora(p, o.shape, a, type, seed));
    }
  }
}
