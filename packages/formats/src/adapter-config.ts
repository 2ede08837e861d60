/**
 * PEFT LoRA adapters checked against a base model from headers only: `adapter_config.json` and the
 * safetensors header of `adapter_model.safetensors` (names, shapes, dtypes, byte ranges). No weight
 * is read or converted here, so the provisioner can validate a registration cheaply; the engine's
 * `loadAdapter` reads the weights where they are used. Every field that changes inference is
 * honoured (r, lora_alpha, use_rslora, target_modules as a list or a regex, rank_pattern and
 * alpha_pattern with PEFT's matching, layers_to_transform, layers_pattern, fan_in_fan_out). Features
 * loramesh cannot serve are refused with an error that names the field; so are pickle weights, shapes
 * that do not fit the base model and targets it does not have.
 */
import { createHash } from "node:crypto";
import { createReadStream, readFileSync } from "node:fs";
import { AdapterError } from "@loramesh/errors";
import { ADAPTER_LIMITS, adapterFiles, type AdapterLimits } from "./adapter-files";
import type { ModelConfig } from "./model-config";
import { compileConfigRegex, type SafeRegex } from "./safe-regex";
import { LOADABLE_DTYPES, SafetensorsError, SafetensorsFile } from "./safetensors";

/** The projections a LoRA module can sit on. */
export type ProjectionName = "q" | "k" | "v" | "o" | "gate" | "up" | "down";

/** A LoRA-capable linear layer of the base model. */
export interface BaseModule {
  name: string;
  layer: number;
  projection: ProjectionName;
  expert: number | undefined;
  inFeatures: number;
  outFeatures: number;
}

/** Every linear layer of the model a LoRA module may target, with its dimensions. */
export function loraTargets(config: ModelConfig): BaseModule[] {
  const out: BaseModule[] = [];
  const h = config.hiddenSize,
    q = config.numHeads * config.headDim,
    kv = config.numKvHeads * config.headDim,
    i = config.intermediateSize;
  for (let layer = 0; layer < config.numLayers; layer++) {
    const attn = `model.layers.${layer}.self_attn`;
    out.push({ name: `${attn}.q_proj`, layer, projection: "q", expert: undefined, inFeatures: h, outFeatures: q });
    out.push({ name: `${attn}.k_proj`, layer, projection: "k", expert: undefined, inFeatures: h, outFeatures: kv });
    out.push({ name: `${attn}.v_proj`, layer, projection: "v", expert: undefined, inFeatures: h, outFeatures: kv });
    out.push({ name: `${attn}.o_proj`, layer, projection: "o", expert: undefined, inFeatures: q, outFeatures: h });
    if (config.numExperts > 0) {
      for (let e = 0; e < config.numExperts; e++) {
        const ex = `model.layers.${layer}.block_sparse_moe.experts.${e}`;
        out.push({ name: `${ex}.w1`, layer, projection: "gate", expert: e, inFeatures: h, outFeatures: i });
        out.push({ name: `${ex}.w3`, layer, projection: "up", expert: e, inFeatures: h, outFeatures: i });
        out.push({ name: `${ex}.w2`, layer, projection: "down", expert: e, inFeatures: i, outFeatures: h });
      }
    } else {
      const mlp = `model.layers.${layer}.mlp`;
      out.push({
        name: `${mlp}.gate_proj`,
        layer,
        projection: "gate",
        expert: undefined,
        inFeatures: h,
        outFeatures: i,
      });
      out.push({ name: `${mlp}.up_proj`, layer, projection: "up", expert: undefined, inFeatures: h, outFeatures: i });
      out.push({
        name: `${mlp}.down_proj`,
        layer,
        projection: "down",
        expert: undefined,
        inFeatures: i,
        outFeatures: h,
      });
    }
  }
  return out;
}

/** Modules that exist in the model but that loramesh does not put LoRA on. */
function unsupportedModules(config: ModelConfig): string[] {
  const names = ["lm_head", "model.embed_tokens"];
  for (let layer = 0; layer < config.numLayers; layer++) {
    if (config.numExperts > 0) names.push(`model.layers.${layer}.block_sparse_moe.gate`);
  }
  return names;
}

// PEFT: a list entry matches a module whose name equals it or ends with "." + entry; a string is a
// regex that must match the whole name (compiled once, by RE2: see safe-regex.ts).
function matchesTarget(target: TargetSpec, name: string): boolean {
  if (!Array.isArray(target)) return target.regex.test(name);
  return target.some((t) => name === t || name.endsWith(`.${t}`));
}

// PEFT's layer filter: the index after `<pattern>.` (any of layers_pattern, or any component).
function layerAllowed(
  name: string,
  layersToTransform: number[] | undefined,
  layersPattern: SafeLayerPattern[],
): boolean {
  if (!layersToTransform) return true;
  let index: number | undefined;
  if (layersPattern.length === 0) index = layerIndexAfterAnyComponent(name);
  else {
    for (const pattern of layersPattern) {
      index = pattern.indexIn(name);
      if (index !== undefined) break;
    }
  }
  return index !== undefined && layersToTransform.includes(index);
}

// `^.*\.[^.]*\.(\d+)\.` without a backtracking engine: the last "<component>.<digits>." in the name.
function layerIndexAfterAnyComponent(name: string): number | undefined {
  const parts = name.split(".");
  for (let i = parts.length - 2; i >= 2; i--) {
    if (/^\d+$/.test(parts[i] as string)) return Number(parts[i]);
  }
  return undefined;
}

interface SafeLayerPattern {
  /** The layer index after `<pattern>.` in the name, if the pattern occurs there. */
  indexIn(name: string): number | undefined;
}

// Tries each "<prefix>.<pattern>.<digits>." split of the name, latest first (PEFT's greedy `.*`).
function layerPattern(pattern: string): SafeLayerPattern {
  const regex = compileConfigRegex("layers_pattern", `^(?:${pattern})$`, pattern);
  return {
    indexIn(name) {
      const parts = name.split(".");
      for (let end = parts.length - 2; end >= 1; end--) {
        if (!/^\d+$/.test(parts[end] as string)) continue;
        for (let start = end - 1; start >= 1; start--) {
          if (regex.test(parts.slice(start, end).join("."))) return Number(parts[end]);
        }
      }
      return undefined;
    },
  };
}

// PEFT's rank_pattern/alpha_pattern lookup: the first key whose regex matches the end of the name.
function patternValue(pattern: readonly PatternEntry[], name: string): number | undefined {
  return pattern.find((p) => p.regex.test(name))?.value;
}

interface PatternEntry {
  regex: SafeRegex;
  value: number;
}

type TargetSpec = string[] | { source: string; regex: SafeRegex };

type Json = Record<string, unknown>;

/** One LoRA module of an adapter as its headers describe it: where it sits and its tensors' names. */
export interface AdapterModuleSpec {
  /** PEFT module name, e.g. model.layers.0.self_attn.q_proj. */
  name: string;
  layer: number;
  projection: ProjectionName;
  /** Expert index for MoE expert projections (w1 = gate, w3 = up, w2 = down). */
  expert: number | undefined;
  rank: number;
  scale: number;
  inFeatures: number;
  outFeatures: number;
  /** Tensor names of A [rank, inFeatures] and B [outFeatures, rank] in adapter_model.safetensors. */
  keyA: string;
  keyB: string;
}

/** What a valid adapter directory holds, from its headers: everything registration needs. */
export interface AdapterInspection {
  dir: string;
  configPath: string;
  weightsPath: string;
  rank: number;
  alpha: number;
  targetModules: string[];
  modules: AdapterModuleSpec[];
  /** Bytes of A and B at true rank once converted to f32. */
  sizeBytes: number;
}

interface PeftConfig {
  r: number;
  alpha: number;
  rslora: boolean;
  targets: TargetSpec;
  rankPattern: PatternEntry[];
  alphaPattern: PatternEntry[];
  layersToTransform: number[] | undefined;
  layersPattern: SafeLayerPattern[];
}

/** PEFT fields that change what the adapter computes and that loramesh cannot honour. */
const UNSUPPORTED_FIELDS = [
  "use_qalora",
  "trainable_token_indices",
  "lora_bias",
  "layer_replication",
  "exclude_modules",
  "target_parameters",
  "alora_invocation_tokens",
  "megatron_config",
] as const;

const isSet = (v: unknown): boolean =>
  v === true ||
  (typeof v === "string" && v !== "") ||
  (Array.isArray(v) && v.length > 0) ||
  (typeof v === "object" && v !== null && !Array.isArray(v) && Object.keys(v).length > 0);

/** A rank: a positive integer up to the documented bound. */
function checkRank(field: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > ADAPTER_LIMITS.maxRank)
    throw new AdapterError(`${field} must be an integer from 1 to ${ADAPTER_LIMITS.maxRank}, got ${describe(v)}`);
  return v;
}

/** An alpha: a finite positive number up to the documented bound. */
function checkAlpha(field: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0 || v > ADAPTER_LIMITS.maxAlpha)
    throw new AdapterError(`${field} must be a number in (0, ${ADAPTER_LIMITS.maxAlpha}], got ${describe(v)}`);
  return v;
}

// A value for an error message, cut short (the config is the caller's, but messages stay small).
function describe(v: unknown): string {
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function patternEntries(field: string, raw: unknown, check: (field: string, v: unknown) => number): PatternEntry[] {
  if (raw === undefined || raw === null) return [];
  if (typeof raw !== "object" || Array.isArray(raw)) throw new AdapterError(`${field} must be an object`);
  const entries = Object.entries(raw as Json);
  if (entries.length > ADAPTER_LIMITS.maxListEntries)
    throw new AdapterError(
      `${field} has ${entries.length} entries, above the limit of ${ADAPTER_LIMITS.maxListEntries}`,
    );
  return entries.map(([key, value]) => ({
    regex: compileConfigRegex(field, `^(?:.*\\.)?(?:${key})$`, key),
    value: check(`${field}[${describe(key)}]`, value),
  }));
}

function targetSpec(target: unknown): TargetSpec {
  if (typeof target === "string")
    return { source: target, regex: compileConfigRegex("target_modules", `^(?:${target})$`, target) };
  if (Array.isArray(target) && target.every((t) => typeof t === "string" && t.length > 0 && t.length <= 256)) {
    if (target.length === 0 || target.length > ADAPTER_LIMITS.maxListEntries)
      throw new AdapterError(`target_modules must list 1 to ${ADAPTER_LIMITS.maxListEntries} names`);
    return target as string[];
  }
  throw new AdapterError(`target_modules must be a list of names or a regex string, got ${describe(target)}`);
}

function layersToTransform(ltt: unknown): number[] | undefined {
  if (ltt === undefined || ltt === null) return undefined;
  const list = typeof ltt === "number" ? [ltt] : ltt;
  if (
    !Array.isArray(list) ||
    list.length > ADAPTER_LIMITS.maxListEntries ||
    !list.every((n) => Number.isSafeInteger(n) && (n as number) >= 0)
  )
    throw new AdapterError(`layers_to_transform must be a layer index or a list of them, got ${describe(ltt)}`);
  return list as number[];
}

function layersPatterns(lp: unknown): SafeLayerPattern[] {
  if (lp === undefined || lp === null) return [];
  const list = typeof lp === "string" ? [lp] : lp;
  if (!Array.isArray(list) || list.length > 16 || !list.every((p) => typeof p === "string"))
    throw new AdapterError(`layers_pattern must be a name or a list of up to 16 names, got ${describe(lp)}`);
  return list.map((p: string) => layerPattern(p));
}

/** Parses and checks `adapter_config.json`'s fields; refuses what loramesh cannot serve. */
export function parsePeftConfig(text: string): PeftConfig {
  let cfg: Json;
  try {
    cfg = JSON.parse(text) as Json;
  } catch (err) {
    // Not the parser's message: it quotes the file.
    throw new AdapterError("adapter_config.json is not valid JSON", { cause: err });
  }
  if (typeof cfg !== "object" || cfg === null || Array.isArray(cfg))
    throw new AdapterError("adapter_config.json must hold a JSON object");
  const peftType = cfg["peft_type"] ?? "LORA";
  if (peftType !== "LORA") throw new AdapterError(`peft_type ${describe(peftType)} is not supported; only LORA is`);
  if (cfg["use_dora"] === true) throw new AdapterError("use_dora: DoRA adapters are not supported");
  if (cfg["bias"] !== undefined && cfg["bias"] !== "none")
    throw new AdapterError(`bias ${describe(cfg["bias"])} is not supported; only "none" is`);
  const modulesToSave = cfg["modules_to_save"];
  if (Array.isArray(modulesToSave) && modulesToSave.length > 0) {
    throw new AdapterError(
      `modules_to_save ${describe(modulesToSave)} is not supported: fully trained modules cannot be shared across tenants`,
    );
  }
  for (const field of UNSUPPORTED_FIELDS) {
    if (isSet(cfg[field])) throw new AdapterError(`${field} is not supported`);
  }
  const rslora = cfg["use_rslora"] ?? false;
  if (typeof rslora !== "boolean") throw new AdapterError(`use_rslora must be true or false, got ${describe(rslora)}`);
  // fan_in_fan_out only transposes Conv1D base weights; for the nn.Linear layers of these
  // architectures PEFT resets it to false, and A/B are stored the same either way.
  return {
    r: checkRank("r", cfg["r"]),
    alpha: cfg["lora_alpha"] === undefined ? 8 : checkAlpha("lora_alpha", cfg["lora_alpha"]),
    rslora,
    targets: targetSpec(cfg["target_modules"]),
    rankPattern: patternEntries("rank_pattern", cfg["rank_pattern"], checkRank),
    alphaPattern: patternEntries("alpha_pattern", cfg["alpha_pattern"], checkAlpha),
    layersToTransform: layersToTransform(cfg["layers_to_transform"]),
    layersPattern: layersPatterns(cfg["layers_pattern"]),
  };
}

/** The base modules the config selects; refuses targets the model lacks or loramesh does not serve. */
function selectModules(peft: PeftConfig, model: ModelConfig): BaseModule[] {
  const { targets } = peft;
  const shown = Array.isArray(targets) ? targets : targets.source;
  const candidates = loraTargets(model);
  const selected = candidates.filter(
    (m) => matchesTarget(targets, m.name) && layerAllowed(m.name, peft.layersToTransform, peft.layersPattern),
  );
  const refused = unsupportedModules(model).filter((n) => matchesTarget(targets, n));
  if (refused.length > 0)
    throw new AdapterError(`target_modules matches ${refused.join(", ")}, which loramesh does not put LoRA on`);
  if (Array.isArray(targets)) {
    for (const t of targets) {
      if (!candidates.some((m) => matchesTarget([t], m.name))) {
        throw new AdapterError(
          `target_modules entry ${JSON.stringify(t)} matches no module of this ${model.modelType} model`,
        );
      }
    }
  }
  if (selected.length === 0)
    throw new AdapterError(`target_modules ${describe(shown)} matches no module of this ${model.modelType} model`);
  return selected;
}

/** Checks one module's A/B tensors in the header: present, the right shapes, a loadable dtype. */
function moduleSpec(file: SafetensorsFile, m: BaseModule, peft: PeftConfig): AdapterModuleSpec {
  const rank = patternValue(peft.rankPattern, m.name) ?? peft.r;
  const a = patternValue(peft.alphaPattern, m.name) ?? peft.alpha;
  const keyA = `base_model.model.${m.name}.lora_A.weight`;
  const keyB = `base_model.model.${m.name}.lora_B.weight`;
  for (const key of [keyA, keyB]) {
    if (!file.entries.has(key))
      throw new AdapterError(`adapter_model.safetensors has no ${key}, which target_modules requires`);
  }
  const shapeA = file.entry(keyA).shape,
    shapeB = file.entry(keyB).shape;
  if (shapeA.length !== 2 || shapeA[0] !== rank || shapeA[1] !== m.inFeatures) {
    throw new AdapterError(
      `${keyA} has shape [${shapeA.join(", ")}]; r=${rank} on ${m.name} (in ${m.inFeatures}) needs [${rank}, ${m.inFeatures}]`,
    );
  }
  if (shapeB.length !== 2 || shapeB[0] !== m.outFeatures || shapeB[1] !== rank) {
    throw new AdapterError(
      `${keyB} has shape [${shapeB.join(", ")}]; ${m.name} (out ${m.outFeatures}) with r=${rank} needs [${m.outFeatures}, ${rank}]`,
    );
  }
  for (const key of [keyA, keyB]) {
    const dtype = file.entry(key).dtype;
    if (!(LOADABLE_DTYPES as readonly string[]).includes(dtype)) {
      // The same words the reader uses when it is asked to convert such a tensor.
      throw new AdapterError(
        `adapter_model.safetensors: adapter_model.safetensors: tensor ${key} is ${dtype}; weights must be one of ${LOADABLE_DTYPES.join(", ")}`,
      );
    }
  }
  const { name, layer, projection, expert, inFeatures, outFeatures } = m;
  const scale = peft.rslora ? a / Math.sqrt(rank) : a / rank;
  return { name, layer, projection, expert, rank, scale, inFeatures, outFeatures, keyA, keyB };
}

/**
 * Validates an adapter directory against a base model from its headers only (adapter_config.json
 * and the safetensors header): names, shapes, dtypes, ranks, byte ranges. Throws AdapterError with
 * the reason; reads no weight.
 */
export function inspectAdapter(
  dir: string,
  model: ModelConfig,
  limits: Partial<AdapterLimits> = {},
): AdapterInspection {
  const { configPath, weightsPath } = adapterFiles(dir, limits);
  const peft = parsePeftConfig(readFileSync(configPath, "utf8"));
  const selected = selectModules(peft, model);
  let file: SafetensorsFile;
  try {
    file = SafetensorsFile.open(weightsPath);
  } catch (err) {
    if (err instanceof SafetensorsError)
      throw new AdapterError(`adapter_model.safetensors: ${err.message}`, { cause: err });
    throw err;
  }
  try {
    const modules = selected.map((m) => moduleSpec(file, m, peft));
    const used = new Set(modules.flatMap((m) => [m.keyA, m.keyB]));
    const extra = [...file.entries.keys()].filter((k) => !used.has(k));
    if (extra.length > 0) {
      throw new AdapterError(
        `adapter_model.safetensors has tensors no target module explains: ${extra.slice(0, 3).join(", ")}${extra.length > 3 ? ", ..." : ""}`,
      );
    }
    return {
      dir,
      configPath,
      weightsPath,
      rank: Math.max(...modules.map((m) => m.rank)),
      alpha: peft.alpha,
      targetModules: [...new Set(selected.map((m) => m.name.split(".").pop() as string))],
      modules,
      sizeBytes: modules.reduce((s, m) => s + 4 * m.rank * (m.inFeatures + m.outFeatures), 0),
    };
  } finally {
    file.close();
  }
}

/** SHA-256 over adapter_config.json then adapter_model.safetensors, streamed (never one buffer). */
export async function adapterContentHash(
  inspection: Pick<AdapterInspection, "configPath" | "weightsPath">,
): Promise<string> {
  const hash = createHash("sha256");
  for (const path of [inspection.configPath, inspection.weightsPath]) {
    for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  }
  return hash.digest("hex");
}

/** The same hash, synchronously, for callers that already read the files (the engine's loader). */
export function adapterContentHashSync(inspection: Pick<AdapterInspection, "configPath" | "weightsPath">): string {
  return createHash("sha256")
    .update(readFileSync(inspection.configPath))
    .update(readFileSync(inspection.weightsPath))
    .digest("hex");
}
