import { resolve } from "node:path";
import { Engine, LocalLoraBackend, Model, loadAdapter } from "@loramesh/engine";
import { Tokenizer } from "@loramesh/formats";

/** The adapter id offline commands register their --adapter directory under. */
export const OFFLINE_ADAPTER_ID = "adapter";

/** An engine on a local model directory, with the adapter directory (if any) resident. */
export function offlineEngine(modelDir: string, adapterDir: string | undefined): Engine {
  const model = Model.load(resolve(modelDir));
  const lora = new LocalLoraBackend(model.config);
  if (adapterDir) lora.add(OFFLINE_ADAPTER_ID, loadAdapter(resolve(adapterDir), model.config));
  return new Engine(model, Tokenizer.load(resolve(modelDir), model.config.eosTokenIds), { lora });
}

/** Parses "1,2,3" into token ids. */
export function parseIds(text: string): number[] {
  const parts = text.split(",").map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => !/^\d+$/.test(p))) {
    throw new Error(`--ids must be comma-separated non-negative integers, got ${JSON.stringify(text)}`);
  }
  return parts.map(Number);
}
