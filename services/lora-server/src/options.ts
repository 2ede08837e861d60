/** Options of the lora-server process: flags and the environment variables that set them. */
import { booleanOption, intOption, numberOption } from "@loramesh/core";
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
  layerwiseLoading: booleanOption({
    flag: "layerwise-loading",
    env: "LORAMESH_LAYERWISE_LOADING",
    default: true,
    description: "serve an adapter's early layers while later ones load from storage",
  }),
  layerWaitMs: intOption({
    flag: "layer-wait-ms",
    env: "LORAMESH_LAYER_WAIT_MS",
    default: 30_000,
    min: 1,
    description: "longest a site call waits for a layer of a loading adapter",
  }),
  hostCacheMiB: intOption({
    flag: "host-cache-mib",
    env: "HOST_CACHE_MIB",
    default: 2048,
    min: 0,
    description: "host cache tier behind the pool, in MiB",
  }),
};
