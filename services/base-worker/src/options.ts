/** Options of the base-worker process: flags and the environment variables that set them. */
import { booleanOption, enumOption, intOption, numberOption, stringOption } from "@loramesh/core";
import { executorOptions } from "@loramesh/mesh";
import { LORA_TRANSPORTS } from "./backends/lora-transport";

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
    description:
      "use shared-memory rings (native doorbells) with same-host LoRA servers (false: never, whatever --lora-transport says)",
  }),
  loraTransport: enumOption({
    flag: "lora-transport",
    env: "LORAMESH_LORA_TRANSPORT",
    default: "auto",
    values: LORA_TRANSPORTS,
    description:
      "wire to LoRA servers: auto (shm on this host, UCX to other hosts when built in, else gRPC), shm, ucx or grpc",
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
  loraTimeoutMs: intOption({
    flag: "lora-timeout-ms",
    env: "LORA_TIMEOUT_MS",
    default: 5_000,
    min: 100,
    description: "a LoRA round trip slower than this counts the server as failed (its rows go to another holder)",
  }),
  loraFailoverMs: intOption({
    flag: "lora-failover-ms",
    env: "LORA_FAILOVER_MS",
    default: 60_000,
    min: 100,
    description: "how long one LoRA site may wait for a live holder (replica or re-placement) before it fails",
  }),
  layerwiseLoading: booleanOption({
    flag: "layerwise-loading",
    env: "LORAMESH_LAYERWISE_LOADING",
    default: true,
    description: "local adapters (coupled, hybrid): serve early layers while later ones load",
  }),
  layerWaitMs: intOption({
    flag: "layer-wait-ms",
    env: "LORAMESH_LAYER_WAIT_MS",
    default: 30_000,
    min: 1,
    description: "longest a site waits for a layer of a loading local adapter",
  }),
  prefixCache: booleanOption({
    flag: "prefix-cache",
    env: "LORAMESH_PREFIX_CACHE",
    default: true,
    description: "reuse KV blocks of prompt prefixes computed under the same adapter version",
  }),
  kvBlocks: intOption({
    flag: "kv-blocks",
    env: "KV_BLOCKS",
    default: 0,
    min: 0,
    description: "KV-cache blocks (0: 256 MiB worth)",
  }),
  heapGrowingPercent: intOption({
    flag: "heap-growing-percent",
    env: "LORAMESH_HEAP_GROWING_PERCENT",
    default: 50,
    min: 0,
    max: 300,
    description:
      "V8 old-generation growth after a full collection, in percent (small: short, frequent collections instead of one long pause; 0: V8's heuristics)",
  }),
  stepProfile: stringOption({
    flag: "step-profile",
    env: "LORAMESH_STEP_PROFILE",
    default: "",
    description:
      "file the worker keeps its engine step periods in, by batch shape (JSON, rewritten every second; empty: off)",
  }),
  stepSeries: booleanOption({
    flag: "step-series",
    env: "LORAMESH_STEP_SERIES",
    default: false,
    description:
      "with --step-profile: also write each step (start, rows, prefill tokens, period, forward µs; the last 8192) into that file when the worker stops",
  }),
};
