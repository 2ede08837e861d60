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
import { createReadStream, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { AdapterError } from "@loramesh/errors";
import type { ModelConfig } from "./model-config";
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
// regex that must match the whole name.
function matchesTarget(target: string | string[], name: string): boolean {
  if (typeof target === "string") return new RegExp(`^(?:${target})$`).test(name);
  return target.some((t) => name === t || name.endsWith(`.${t}`));
}

// PEFT's layer filter: the index after `<pattern>.` (any of layers_pattern, or any component).
function layerAllowed(
  name: string,
  layersToTransform: number[] | undefined,
  layersPattern: string[] | undefined,
): boolean {
  if (!layersToTransform) return true;
  let match: RegExpExecArray | null = null;
  if (!layersPattern || layersPattern.length === 0) match = /^.*\.[^.]*\.(\d+)\./.exec(name);
  else {
    for (const pattern of layersPattern) {
      match = new RegExp(`^.*\\.${pattern}\\.(\\d+)\\.`).exec(name);
      if (match) break;
    }
  }
  return match !== null && layersToTransform.includes(Number(match[1]));
}

// PEFT's rank_pattern/alpha_pattern lookup: the first key whose regex matches the end of the name.
function patternValue(pattern: Record<string, number>, name: string): number | undefined {
  for (const [key, value] of Object.entries(pattern)) {
    if (new RegExp(`^(?:.*\\.)?(?:${key})$`).test(name)) return value;
  }
  return undefined;
}

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
  targets: string | string[];
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  layersToTransform: number[] | undefined;
  layersPattern: string[] | undefined;
}

/** Parses and checks `adapter_config.json`'s fields; refuses what loramesh cannot serve. */
export function parsePeftConfig(text: string): PeftConfig {
  let cfg: Json;
  try {
    cfg = JSON.parse(text) as Json;
  } catch (err) {
    throw new AdapterError(`adapter_config.json is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  const peftType = cfg["peft_type"] ?? "LORA";
  if (peftType !== "LORA")
    throw new AdapterError(`peft_type ${JSON.stringify(peftType)} is not supported; only LORA is`);
  if (cfg["use_dora"] === true) throw new AdapterError("use_dora: DoRA adapters are not supported");
  if (cfg["bias"] !== undefined && cfg["bias"] !== "none")
    throw new AdapterError(`bias ${JSON.stringify(cfg["bias"])} is not supported; only "none" is`);
  const modulesToSave = cfg["modules_to_save"];
  if (Array.isArray(modulesToSave) && modulesToSave.length > 0) {
    throw new AdapterError(
      `modules_to_save ${JSON.stringify(modulesToSave)} is not supported: fully trained modules cannot be shared across tenants`,
    );
  }
  for (const field of ["use_qalora", "trainable_token_indices", "lora_bias"]) {
    const v = cfg[field];
    if (
      v === true ||
      (Array.isArray(v) && v.length > 0) ||
      (typeof v === "object" && v !== null && !Array.isArray(v) && Object.keys(v).length > 0)
    ) {
      throw new AdapterError(`${field} is not supported`);
    }
  }
  const r = cfg["r"];
  if (typeof r !== "number" || !Number.isInteger(r) || r < 1)
    throw new AdapterError(`r must be a positive integer, got ${JSON.stringify(r)}`);
  const target = cfg["target_modules"];
  if (!(typeof target === "string" || (Array.isArray(target) && target.every((t) => typeof t === "string")))) {
    throw new AdapterError(`target_modules must be a list of names or a regex string, got ${JSON.stringify(target)}`);
  }
  const ltt = cfg["layers_to_transform"];
  const lp = cfg["layers_pattern"];
  // fan_in_fan_out only transposes Conv1D base weights; for the nn.Linear layers of these
  // architectures PEFT resets it to false, and A/B are stored the same either way.
  return {
    r,
    alpha: typeof cfg["lora_alpha"] === "number" ? cfg["lora_alpha"] : 8,
    rslora: cfg["use_rslora"] === true,
    targets: target,
    rankPattern: (cfg["rank_pattern"] ?? {}) as Record<string, number>,
    alphaPattern: (cfg["alpha_pattern"] ?? {}) as Record<string, number>,
    layersToTransform: typeof ltt === "number" ? [ltt] : Array.isArray(ltt) ? (ltt as number[]) : undefined,
    layersPattern: typeof lp === "string" ? [lp] : Array.isArray(lp) ? (lp as string[]) : undefined,
  };
}

/** The base modules the config selects; refuses targets the model lacks or loramesh does not serve. */
function selectModules(peft: PeftConfig, model: ModelConfig): BaseModule[] {
  const { targets } = peft;
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
    throw new AdapterError(
      `target_modules ${JSON.stringify(targets)} matches no module of this ${model.modelType} model`,
    );
  return selected;
}

/** Checks one module's A/B tensors in the header: present, the right shapes, a loadable dtype. */
function moduleSpec(file: SafetensorsFile, m: BaseModule, peft: PeftConfig): AdapterModuleSpec {
  const rank = patternValue(peft.rankPattern, m.name) ?? peft.r;
  const a = patternValue(peft.alphaPattern, m.name) ?? peft.alpha;
  if (!Number.isInteger(rank) || rank < 1) throw new AdapterError(`rank_pattern gives ${m.name} rank ${rank}`);
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
export function inspectAdapter(dir: string, model: ModelConfig): AdapterInspection {
  const configPath = join(dir, "adapter_config.json");
  const weightsPath = join(dir, "adapter_model.safetensors");
  if (!existsSync(configPath)) throw new AdapterError(`${dir} has no adapter_config.json`);
  if (!existsSync(weightsPath)) {
    if (existsSync(join(dir, "adapter_model.bin"))) {
      throw new AdapterError(
        `${dir}: adapter_model.bin is a pickle file and is refused; save the adapter with safetensors`,
      );
    }
    throw new AdapterError(`${dir} has no adapter_model.safetensors`);
  }
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
