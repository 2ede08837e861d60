/**
 * An independent judge of the fuzz tests' accepted adapters: the documented rules the issue names
 * (r, lora_alpha and their patterns, use_dora, F32 weights inside the file, finite and within the
 * bound), checked without the validator, so an adapter it wrongly accepts counts as "accepted bad".
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";

/** The documented weight bound (docs/mesh.md, adapter validation). */
const MAX_ABS_WEIGHT = 1e4;

const positiveInt = (v: unknown, max: number): boolean =>
  Number.isInteger(v) && (v as number) >= 1 && (v as number) <= max;
const alphaOk = (v: unknown): boolean => typeof v === "number" && Number.isFinite(v) && v > 0 && v <= 1e6;

/** Why the adapter in `dir` breaks a documented rule, or undefined when it keeps every one checked. */
export function adapterRuleBroken(dir: string): string | undefined {
  return (
    configRuleBroken(readFileSync(join(dir, "adapter_config.json"), "utf8")) ??
    weightsRuleBroken(readFileSync(join(dir, "adapter_model.safetensors")))
  );
}

/** Why an adapter_config.json text breaks a documented rule, or undefined. */
export function configRuleBroken(text: string): string | undefined {
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch {
    return "adapter_config.json is not JSON";
  }
  if (typeof config !== "object" || config === null || Array.isArray(config)) return "config is not an object";
  const cfg = config as Record<string, unknown>;
  if (!positiveInt(cfg["r"], 4096)) return `r ${JSON.stringify(cfg["r"])}`;
  // PEFT's default lora_alpha is 8 when the field is absent.
  if (cfg["lora_alpha"] !== undefined && !alphaOk(cfg["lora_alpha"]))
    return `lora_alpha ${JSON.stringify(cfg["lora_alpha"])}`;
  for (const [field, ok] of [
    ["rank_pattern", (v: unknown) => positiveInt(v, 4096)],
    ["alpha_pattern", alphaOk],
  ] as const) {
    const pattern = cfg[field];
    if (pattern !== undefined && pattern !== null && typeof pattern === "object")
      for (const [k, v] of Object.entries(pattern)) if (!ok(v)) return `${field}.${k} ${JSON.stringify(v)}`;
  }
  if (cfg["use_dora"] === true) return "use_dora";
  return undefined;
}

/** Why a safetensors file breaks a rule: a tensor not F32 or outside the file, a value not finite or out of bound. */
export function weightsRuleBroken(file: Buffer): string | undefined {
  if (file.length < 8) return "safetensors shorter than its length prefix";
  const length = Number(file.readBigUInt64LE(0));
  if (8 + length > file.length) return "safetensors header past the end";
  let header: Record<string, { dtype?: unknown; data_offsets?: unknown }>;
  try {
    header = JSON.parse(file.subarray(8, 8 + length).toString("utf8")) as typeof header;
  } catch {
    return "safetensors header is not JSON";
  }
  const data = file.subarray(8 + length);
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    if (entry?.dtype !== "F32") return `${name}: dtype ${JSON.stringify(entry?.dtype)}`;
    const [start, end] = (entry.data_offsets ?? []) as number[];
    if (!Number.isInteger(start) || !Number.isInteger(end) || start! < 0 || end! > data.length || end! < start!)
      return `${name}: data_offsets`;
    for (let at = start as number; at + 4 <= (end as number); at += 4) {
      const x = data.readFloatLE(at);
      if (!Number.isFinite(x) || Math.abs(x) > MAX_ABS_WEIGHT) return `${name}: value ${x}`;
    }
  }
  return undefined;
}
