/** Options of the provisioner process: flags and the environment variables that set them. */
import { addressOption, intOption, stringOption } from "@loramesh/core";

export const options = {
  listen: addressOption({
    flag: "listen",
    env: "LISTEN_ADDRESS",
    default: "127.0.0.1:0",
    description: "address to serve on",
  }),
  redisUrl: stringOption({
    flag: "redis-url",
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
};
