/** Options of the lora-server process: flags and the environment variables that set them. */
import { intOption, numberOption } from "@loramesh/core";
import { executorOptions } from "@loramesh/mesh";

export const options = {
  ...executorOptions("lora", "base model directory (its config sizes the LoRA sites)"),
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
