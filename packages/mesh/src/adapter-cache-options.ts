import { intOption, stringOption } from "@loramesh/core";
import { defaultCacheDir } from "@loramesh/sources";

/** Flags of every process that fetches adapters (provisioner, LoRA server, base worker). */
export function adapterCacheOptions() {
  return {
    adapterCache: stringOption({
      flag: "adapter-cache",
      env: "LORAMESH_ADAPTER_CACHE",
      default: defaultCacheDir(),
      description: "content-addressed cache of fetched adapters, shared by the processes of a host",
    }),
    adapterCacheMiB: intOption({
      flag: "adapter-cache-mib",
      env: "ADAPTER_CACHE_MIB",
      default: 10240,
      min: 1,
      description: "size limit of the adapter cache in MiB (least recently used versions are evicted)",
    }),
  };
}
