import { addressOption, DEFAULT_LISTEN_ADDRESS, stringOption } from "@loramesh/core";
import { adapterCacheOptions } from "./adapter-cache-options";

/** Read by the native core (native/src/priority.h) when its first data-plane thread starts. */
const DATAPLANE_PRIORITY_ENV = "LORAMESH_DATAPLANE_PRIORITY";

/**
 * Flags every executor process (base worker, LoRA server) takes: where it listens and is reached,
 * its provisioner, Redis for adapter jobs, the base model, its id, and the priority of its native
 * data-plane threads.
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
    dataplanePriority: stringOption({
      flag: "dataplane-priority",
      env: DATAPLANE_PRIORITY_ENV,
      default: "",
      pattern: /^(off|nice(:([1-9]|1\d|20))?|fifo(:([1-9]|10))?)$/,
      patternHint: "off, nice[:1-20] or fifo[:1-10]",
      description:
        "scheduling priority of the native step, op-pool and ring threads: off, nice[:N] (nice -N) or fifo[:P] (SCHED_FIFO); needs CAP_SYS_NICE, else they run unraised (default: the native default, docs/performance.md)",
    }),
  };
}

/**
 * Hands --dataplane-priority to the native core: it reads the environment variable, once, when the
 * first step, pool or ring thread starts, so call this before the service starts any of them.
 */
export function applyDataplanePriority(setting: string): void {
  if (setting !== "") process.env[DATAPLANE_PRIORITY_ENV] = setting;
}
