/** Options of the base-worker process: flags and the environment variables that set them. */
import { addressOption, booleanOption, enumOption, intOption, numberOption, stringOption } from "@loramesh/core";

export const options = {
  listen: addressOption({
    flag: "listen",
    env: "LISTEN_ADDRESS",
    default: "127.0.0.1:0",
    description: "address to serve on",
  }),
  advertise: stringOption({
    flag: "advertise",
    env: "ADVERTISE_ADDRESS",
    default: "",
    description: "address peers use to reach this worker (default: the bound address)",
  }),
  provisioner: addressOption({
    flag: "provisioner",
    env: "PROVISIONER_ADDRESS",
    description: "provisioner gRPC address",
  }),
  redisUrl: stringOption({
    flag: "redis-url",
    env: "REDIS_URL",
    description: "Redis for adapter jobs (redis://HOST:PORT or unix:/PATH)",
  }),
  model: stringOption({ flag: "model", env: "LORAMESH_MODEL", description: "base model directory" }),
  mode: enumOption({
    flag: "mode",
    env: "LORA_MODE",
    default: "disaggregated",
    values: ["coupled", "disaggregated", "hybrid"] as const,
    description: "where LoRA runs",
  }),
  executorId: stringOption({
    flag: "executor-id",
    env: "EXECUTOR_ID",
    default: "",
    description: "stable id (default: worker-<random>)",
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
    description: "use shared memory with same-host LoRA servers",
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
