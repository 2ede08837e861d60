import { addressOption, DEFAULT_LISTEN_ADDRESS, stringOption } from "@loramesh/core";
import { adapterCacheOptions } from "./adapter-cache-options";

/**
 * Flags every executor process (base worker, LoRA server) takes: where it listens and is reached,
 * its provisioner, Redis for adapter jobs, the base model, and its id.
 */
export function executorOptions(idPrefix: string, modelDescription: string) {
  return {
    listen: addressOption({
      flag: "listen",
      env: "LISTEN_ADDRESS",
      default: DEFAULT_LISTEN_ADDRESS,
      description: "address to serve on",
    }),
    advertise: stringOption({
      flag: "advertise",
      env: "ADVERTISE_ADDRESS",
      default: "",
      description: "address peers use to reach this process (default: the bound address)",
    }),
    provisioner: addressOption({
      flag: "provisioner",
      env: "PROVISIONER_ADDRESS",
      description: "provisioner gRPC address",
    }),
    redisUrl: stringOption({
      flag: "redis-url",
      secret: true,
      env: "REDIS_URL",
      description: "Redis for adapter jobs (redis://HOST:PORT or unix:/PATH)",
    }),
    model: stringOption({ flag: "model", env: "LORAMESH_MODEL", description: modelDescription }),
    executorId: stringOption({
      flag: "executor-id",
      env: "EXECUTOR_ID",
      default: "",
      description: `stable id (default: ${idPrefix}-<random>)`,
    }),
    ...adapterCacheOptions(),
  };
}
