/** Options of the provisioner process: flags and the environment variables that set them. */
import { addressOption, enumOption, intOption, numberOption, stringOption } from "@loramesh/core";
import { adapterCacheOptions } from "@loramesh/mesh";
import { POLICY_NAMES } from "@loramesh/policy";

export const options = {
  ...adapterCacheOptions(),
  listen: addressOption({
    flag: "listen",
    env: "LISTEN_ADDRESS",
    default: "127.0.0.1:0",
    description: "address to serve on",
  }),
  redisUrl: stringOption({
    flag: "redis-url",
    secret: true,
    env: "REDIS_URL",
    description: "Redis holding placement state: redis://host:port[/db] or unix:/path/to/socket",
    pattern: /^(rediss?:\/\/.+|unix:.+)$/,
    patternHint: "redis://HOST:PORT or unix:/PATH",
  }),
  model: stringOption({
    flag: "model",
    env: "LORAMESH_MODEL",
    description: "base model directory (adapters are validated against its config)",
  }),
  heartbeatTtlMs: intOption({
    flag: "heartbeat-ttl-ms",
    env: "EXECUTOR_HEARTBEAT_TTL_MS",
    default: 6_000,
    min: 500,
    description: "an executor that has not sent a heartbeat for this long leaves placement",
  }),
  placementPolicy: enumOption({
    flag: "placement-policy",
    env: "PLACEMENT_POLICY",
    default: "rank-aware+rebalancing",
    values: POLICY_NAMES,
    description: "how adapters are placed on LoRA servers",
  }),
  maxReplicas: intOption({
    flag: "max-replicas",
    env: "MAX_REPLICAS",
    default: 4,
    min: 1,
    description: "most LoRA servers a hot adapter is replicated to by the rank-aware policies",
  }),
  rebalanceIntervalMs: intOption({
    flag: "rebalance-interval-ms",
    env: "REBALANCE_INTERVAL_MS",
    default: 30_000,
    min: 100,
    description: "how often rank-aware+rebalancing may move adapters when load imbalance crosses its threshold",
  }),
  drainMs: intOption({
    flag: "drain-ms",
    env: "MOVE_DRAIN_MS",
    default: 3_000,
    min: 0,
    description: "how long a moved adapter stays on its source after routing switched",
  }),
  planCoverage: numberOption({
    flag: "plan-coverage",
    env: "PLAN_COVERAGE",
    default: 0.95,
    min: 0,
    max: 1,
    description: "planner target: probability that a request's adapter is resident on arrival",
  }),
  planTpotMs: numberOption({
    flag: "plan-tpot-ms",
    env: "PLAN_TPOT_MS",
    default: 100,
    min: 0.001,
    description: "planner target: mean time per output token, ms",
  }),
  adapterRoots: stringOption({
    flag: "adapter-roots",
    env: "ADAPTER_ROOTS",
    default: "",
    description:
      "comma-separated directories adapters may be registered from (symlinks resolved); empty allows any directory",
  }),
  maxAdapterMib: intOption({
    flag: "max-adapter-mib",
    env: "MAX_ADAPTER_MIB",
    default: 8192,
    min: 1,
    description: "largest adapter_model.safetensors registration accepts, MiB",
  }),
};
