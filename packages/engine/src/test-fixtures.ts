// Helpers for engine tests: the vendored golden fixtures and a minimal safetensors writer for
// building broken or sharded files.
import { readFileSync } from "node:fs";
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
