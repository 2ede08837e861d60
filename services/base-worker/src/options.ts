/** Options of the base-worker process: flags and the environment variables that set them. */
import { booleanOption, enumOption, intOption, numberOption } from "@loramesh/core";
import { executorOptions } from "@loramesh/mesh";

export const options = {
  ...executorOptions("worker", "base model directory"),
  mode: enumOption({
    flag: "mode",
    env: "LORA_MODE",
    default: "disaggregated",
    values: ["coupled", "disaggregated", "hybrid"] as const,
    description: "where LoRA runs",
  }),
  capacityMiB: numberOption({
    flag: "adapter-capacity-mib",
    env: "ADAPTER_CAPACITY_MIB",
    default: 256,
    min: 0,
    description: "budget for local adapters (coupled, hybrid)",
  }),
  sharedMemory: booleanOption({
    flag: "shared-memory",
    env: "LORAMESH_SHARED_MEMORY",
    default: true,
    description: "use shared-memory rings (native doorbells) with same-host LoRA servers",
  }),
  maxBatchTokens: intOption({
    flag: "max-batch-tokens",
    env: "MAX_BATCH_TOKENS",
    default: 512,
    min: 1,
    description: "tokens per engine step",
  }),
  siteSpanRatio: numberOption({
    flag: "lora-site-span-ratio",
    env: "LORAMESH_LORA_SITE_SPAN_RATIO",
    default: 0.05,
    min: 0,
    max: 1,
    description: "fraction of LoRA sites that get their own span in traced requests",
  }),
  kvBlocks: intOption({
    flag: "kv-blocks",
    env: "KV_BLOCKS",
    default: 0,
    min: 0,
    description: "KV-cache blocks (0: 256 MiB worth)",
  }),
};
