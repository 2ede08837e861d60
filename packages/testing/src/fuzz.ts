/**
 * Seeded mutators for the fuzz tests: adapter configs, safetensors files and generation requests.
 * Every run with the same seed makes the same inputs, so a failure can be replayed.
 */
import { readFileSync } from "node:fs";

/** mulberry32: small, fast and reproducible. */
export class FuzzRng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }
}

/** Values that break parsers and validators: wrong types, extremes, non-finite numbers. */
const NASTY: readonly unknown[] = [
  null,
  true,
  false,
  0,
  -1,
  1,
  0.5,
  -0.0,
  1e308,
  -1e308,
  2 ** 53 + 2,
  4097,
  "8",
  "",
  "NaN",
  [],
  {},
  [1, 2],
  ["q_proj"],
  "mod(.|.)*X",
  "(",
  "(?=q)proj",
  "(a)\\1",
  "a".repeat(2000),
  "q_proj|v_proj",
  ".*",
  { q_proj: 4 },
  { "(": 4 },
  { down_proj: 1e308 },
  { o_proj: -2 },
];

const CONFIG_FIELDS = [
  "r",
  "lora_alpha",
  "target_modules",
  "rank_pattern",
  "alpha_pattern",
  "layers_to_transform",
  "layers_pattern",
  "use_rslora",
  "use_dora",
  "bias",
  "peft_type",
  "modules_to_save",
  "layer_replication",
  "exclude_modules",
  "target_parameters",
  "lora_bias",
  "fan_in_fan_out",
] as const;

/** A mutated adapter_config.json text (1-3 field changes, sometimes broken JSON). */
export function mutateAdapterConfig(rng: FuzzRng, base: Record<string, unknown>): string {
  const cfg: Record<string, unknown> = { ...base };
  const changes = 1 + rng.int(3);
  for (let i = 0; i < changes; i++) {
    const field = rng.pick(CONFIG_FIELDS);
    if (rng.next() < 0.1) delete cfg[field];
    else cfg[field] = rng.pick(NASTY);
  }
  const text = JSON.stringify(cfg);
  const roll = rng.next();
  if (roll < 0.05) return text.slice(0, rng.int(text.length)); // truncated JSON
  if (roll < 0.08) return "[" + text + "]"; // not an object
  return text;
}

/** Writes `value` into the element at `index` of a little-endian f32 tensor region. */
function poke(bytes: Buffer, offset: number, value: number): void {
  if (offset + 4 <= bytes.length) bytes.writeFloatLE(value, offset);
}

/**
 * A mutated copy of a safetensors file: header edits (dtype, shape, offsets, truncation, length
 * prefix), or bad weight values (NaN, ±Inf, 1e18) in the data section.
 */
export function mutateSafetensors(rng: FuzzRng, original: Buffer): Buffer {
  const headerLength = Number(original.readBigUInt64LE(0));
  const header = JSON.parse(original.subarray(8, 8 + headerLength).toString("utf8")) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const data = Buffer.from(original.subarray(8 + headerLength));
  const names = Object.keys(header).filter((k) => k !== "__metadata__");
  const kind = rng.int(10);
  if (kind === 0 && names.length > 0) {
    // A bad weight: the data section stays the right size, the value is not.
    const entry = header[rng.pick(names)] as { data_offsets: [number, number] };
    const span = entry.data_offsets[1] - entry.data_offsets[0];
    const at = entry.data_offsets[0] + 4 * rng.int(Math.max(1, Math.floor(span / 4)));
    poke(data, at, rng.pick([Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1e18, -3e5]));
    return Buffer.concat([original.subarray(0, 8 + headerLength), data]);
  }
  if (kind === 1) return original.subarray(0, rng.int(original.length)); // truncated anywhere
  if (kind === 2) {
    const out = Buffer.from(original);
    out.writeBigUInt64LE(BigInt(rng.pick([0, 1, headerLength + 1, headerLength - 1, 2 ** 40, original.length])), 0);
    return out;
  }
  if (names.length > 0) {
    const name = rng.pick(names);
    const entry = header[name] as Record<string, unknown>;
    const field = rng.pick(["dtype", "shape", "data_offsets", "entry", "rename", "extra"] as const);
    if (field === "dtype") entry["dtype"] = rng.pick(["F16", "BF16", "F64", "I8", "F8", "", 3]);
    else if (field === "shape")
      entry["shape"] = rng.pick([
        [],
        [1],
        [-1, 2],
        [2 ** 31, 2 ** 31],
        [8, 1e308],
        "8",
        [(entry["shape"] as number[])[1], (entry["shape"] as number[])[0]],
      ]);
    else if (field === "data_offsets")
      entry["data_offsets"] = rng.pick([[0, 0], [4, 0], [-4, 4], [0, 1e308], "0", [0, 2 ** 53 + 2]]);
    else if (field === "entry") header[name] = rng.pick(NASTY) as never;
    else if (field === "rename") {
      header[`${name}.x`] = header[name] as never;
      delete header[name];
    } else header["__metadata__"] = rng.pick([{ a: "b" }, "x", 3, null]) as never;
  }
  let json = Buffer.from(JSON.stringify(header));
  if (rng.next() < 0.1) json = json.subarray(0, rng.int(json.length));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, json, data]);
}

/** The base config of an adapter directory, parsed (mutation input). */
export function readAdapterConfig(dir: string): Record<string, unknown> {
  return JSON.parse(readFileSync(`${dir}/adapter_config.json`, "utf8")) as Record<string, unknown>;
}
