// Helpers for engine tests: the vendored golden fixtures and a minimal safetensors writer for
// building broken or sharded files.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { GOLDEN_DIR } from "@loramesh/testing";

export const MODELS = ["tiny-llama", "tiny-mixtral"] as const;
export const modelDir = (m: string): string => join(GOLDEN_DIR, "models", m);
export const adapterDir = (m: string, a: string): string => join(GOLDEN_DIR, "adapters", m, a);

export interface GoldenCase {
  adapter: string | null;
  prompt: number;
  output_ids: number[];
  min_top2_margin: number;
}
export interface Golden {
  model: string;
  steps: number;
  prompts: Array<{ text: string; ids: number[] }>;
  cases: GoldenCase[];
}

export function golden(m: string): Golden {
  return JSON.parse(readFileSync(join(GOLDEN_DIR, "expected", `${m}.json`), "utf8")) as Golden;
}

export interface RawTensor {
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

/** Writes a safetensors file (tensors in the given order). */
export function writeSafetensors(path: string, tensors: Record<string, RawTensor>): void {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(
    path,
    Buffer.concat([
      length,
      json,
      ...Object.values(tensors).map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)),
    ]),
  );
}

export function f32Bytes(values: Float32Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}
