/**
 * `config.json` of the supported architectures, as older and newer transformers write it (top-level
 * `rope_theta`/`rope_scaling`, or `rope_parameters`), normalised into one shape.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { InvalidArgumentError } from "@loramesh/errors";

/** Rope scaling as Hugging Face names it, with the fields each type reads. */
export interface RopeConfig {
  type: "default" | "linear" | "dynamic" | "llama3" | "yarn";
  base: number;
  rotaryDim: number;
  factor?: number;
  maxPositionEmbeddings?: number;
  originalMaxPositionEmbeddings?: number;
  lowFreqFactor?: number;
  highFreqFactor?: number;
  betaFast?: number;
  betaSlow?: number;
  mscale?: number;
  mscaleAllDim?: number;
  attentionFactor?: number;
  truncate?: boolean;
}

/** A config names an architecture or feature loramesh does not implement. */
export class UnsupportedModelError extends InvalidArgumentError {}

export const SUPPORTED_MODEL_TYPES = ["llama", "mistral", "qwen2", "mixtral"] as const;
export type ModelType = (typeof SUPPORTED_MODEL_TYPES)[number];

export interface ModelConfig {
  modelType: ModelType;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  maxPositionEmbeddings: number;
  rope: Omit<RopeConfig, "rotaryDim"> & { rotaryDim: number };
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (qwen2 always; llama/mistral when attention_bias). */
  attentionBias: boolean;
  /** Sliding-window size per layer (0 = full attention). */
  slidingWindow: number[];
  /** MoE (mixtral): experts per layer and experts per token; 0 for dense models. */
  numExperts: number;
  expertsPerToken: number;
  bosTokenId: number | undefined;
  eosTokenIds: number[];
}

type Json = Record<string, unknown>;

function num(cfg: Json, key: string, fallback?: number): number {
  const v = cfg[key];
  if (typeof v === "number" && Number.isFinite(v)) return v;
  if ((v === undefined || v === null) && fallback !== undefined) return fallback;
  throw new UnsupportedModelError(`config.json: ${key} must be a number, got ${JSON.stringify(v)}`);
}

function ids(v: unknown): number[] {
  if (typeof v === "number") return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === "number");
  return [];
}

export function loadModelConfig(dir: string): ModelConfig {
  let raw: Json;
  try {
    raw = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Json;
  } catch (err) {
    throw new InvalidArgumentError(`cannot read ${join(dir, "config.json")}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return parseModelConfig(raw);
}

export function parseModelConfig(raw: Json): ModelConfig {
  const modelType = raw["model_type"];
  if (typeof modelType !== "string" || !(SUPPORTED_MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw new UnsupportedModelError(
      `model_type ${JSON.stringify(modelType)} is not supported; supported: ${SUPPORTED_MODEL_TYPES.join(", ")}`,
    );
  }
  const type = modelType as ModelType;
  const act = raw["hidden_act"] ?? raw["hidden_activation"] ?? "silu";
  if (act !== "silu")
    throw new UnsupportedModelError(`hidden_act ${JSON.stringify(act)} is not supported; supported: silu`);
  if (raw["mlp_bias"] === true) throw new UnsupportedModelError("mlp_bias: true is not supported");
  const hiddenSize = num(raw, "hidden_size");
  const numHeads = num(raw, "num_attention_heads");
  const numKvHeads = num(raw, "num_key_value_heads", numHeads);
  const headDim = num(raw, "head_dim", hiddenSize / numHeads);
  const numLayers = num(raw, "num_hidden_layers");
  if (!Number.isInteger(headDim) || headDim <= 0)
    throw new UnsupportedModelError(`head_dim ${headDim} is not a positive integer`);
  if (numHeads % numKvHeads !== 0)
    throw new UnsupportedModelError(
      `num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`,
    );
  const maxPositionEmbeddings = num(raw, "max_position_embeddings", 2048);

  // Rope: transformers ≥ 5 writes rope_parameters {rope_theta, rope_type, ...}; older versions write
  // rope_theta at the top and rope_scaling {type|rope_type, factor, ...}.
  const params = (raw["rope_parameters"] ?? raw["rope_scaling"] ?? {}) as Json | null;
  const p: Json = params ?? {};
  const rawType = p["rope_type"] ?? p["type"] ?? "default";
  const ropeType = typeof rawType === "string" ? rawType : JSON.stringify(rawType);
  const theta = num(p, "rope_theta", num(raw, "rope_theta", 10000));
  const partial = num(p, "partial_rotary_factor", num(raw, "partial_rotary_factor", 1));
  const rotaryDim = Math.floor(headDim * partial);
  const supportedRope = ["default", "linear", "dynamic", "llama3", "yarn"];
  if (!supportedRope.includes(ropeType)) {
    throw new UnsupportedModelError(
      `rope type ${JSON.stringify(ropeType)} is not supported; supported: ${supportedRope.join(", ")}`,
    );
  }
  const opt = (key: string): number | undefined => (typeof p[key] === "number" ? p[key] : undefined);
  const rope: ModelConfig["rope"] = {
    type: ropeType as RopeConfig["type"],
    base: theta,
    rotaryDim,
    maxPositionEmbeddings,
    truncate: p["truncate"] === false ? false : true,
  };
  const set = <K extends keyof RopeConfig>(k: K, v: RopeConfig[K] | undefined): void => {
    if (v !== undefined) rope[k] = v;
  };
  set("factor", opt("factor"));
  set("originalMaxPositionEmbeddings", opt("original_max_position_embeddings"));
  set("lowFreqFactor", opt("low_freq_factor"));
  set("highFreqFactor", opt("high_freq_factor"));
  set("betaFast", opt("beta_fast"));
  set("betaSlow", opt("beta_slow"));
  set("mscale", opt("mscale"));
  set("mscaleAllDim", opt("mscale_all_dim"));
  set("attentionFactor", opt("attention_factor"));

  // Sliding windows: mistral sets sliding_window; qwen2 only when use_sliding_window, and then only
  // for layers from max_window_layers on.
  const window = typeof raw["sliding_window"] === "number" ? raw["sliding_window"] : 0;
  let slidingWindow = Array.from({ length: numLayers }, () => 0);
  if (type === "mistral" || type === "mixtral") slidingWindow = slidingWindow.map(() => window);
  if (type === "qwen2" && raw["use_sliding_window"] === true && window > 0) {
    const from = num(raw, "max_window_layers", numLayers);
    slidingWindow = slidingWindow.map((_, l) => (l >= from ? window : 0));
  }
  if (Array.isArray(raw["layer_types"])) {
    slidingWindow = (raw["layer_types"] as unknown[]).map((t, l) =>
      t === "sliding_attention" ? window : (slidingWindow[l] ?? 0),
    );
  }

  const numExperts = type === "mixtral" ? num(raw, "num_local_experts") : 0;
  const expertsPerToken = type === "mixtral" ? num(raw, "num_experts_per_tok") : 0;
  if (type === "mixtral" && (expertsPerToken < 1 || expertsPerToken > numExperts)) {
    throw new UnsupportedModelError(
      `num_experts_per_tok ${expertsPerToken} must be between 1 and num_local_experts ${numExperts}`,
    );
  }
  return {
    modelType: type,
    hiddenSize,
    intermediateSize: num(raw, "intermediate_size"),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: num(raw, "vocab_size"),
    rmsNormEps: num(raw, "rms_norm_eps", 1e-6),
    maxPositionEmbeddings,
    rope,
    tieWordEmbeddings: raw["tie_word_embeddings"] === true,
    attentionBias: type === "qwen2" ? true : raw["attention_bias"] === true,
    slidingWindow,
    numExperts,
    expertsPerToken,
    bosTokenId: typeof raw["bos_token_id"] === "number" ? raw["bos_token_id"] : undefined,
    eosTokenIds: ids(raw["eos_token_id"]),
  };
}
