/** Options of the lora-server process: flags and the environment variables that set them. */
import { addressOption, intOption, numberOption, stringOption } from "@loramesh/core";

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
    description: "address peers use to reach this server (default: the bound address)",
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
  model: stringOption({
    flag: "model",
    env: "LORAMESH_MODEL",
    description: "base model directory (its config sizes the LoRA sites)",
  }),
  executorId: stringOption({
    flag: "executor-id",
    env: "EXECUTOR_ID",
    default: "",
    description: "stable id (default: lora-<random>)",
  }),
  capacityMiB: intOption({
    flag: "capacity-mib",
    env: "ADAPTER_CAPACITY_MIB",
    default: 1024,
    min: 1,
    description: "adapter pool budget in MiB",
  }),
  batchWindowMs: numberOption({
    flag: "batch-window-ms",
    env: "BATCH_WINDOW_MS",
    default: 2,
    min: 0,
    description: "longest a work item waits for other workers' items for the same site",
  }),
  hostCacheMiB: intOption({
    flag: "host-cache-mib",
    env: "HOST_CACHE_MIB",
    default: 2048,
    min: 0,
    description: "host cache tier behind the pool, in MiB",
  }),
};
