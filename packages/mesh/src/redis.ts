import { redisConnectionOptions, UnavailableError } from "@loramesh/core";
import { Redis, type RedisOptions } from "ioredis";

/**
 * An ioredis connection for a REDIS_URL (`redis://...` or `unix:/path`). `forBullmq` sets the
 * options BullMQ requires for its blocking connections.
 */
export function createRedis(url: string, forBullmq = false): Redis {
  const target = redisConnectionOptions(url);
  const common: RedisOptions = forBullmq
    ? { maxRetriesPerRequest: null, enableReadyCheck: false }
    : { maxRetriesPerRequest: 3 };
  return "path" in target ? new Redis({ ...common, path: target.path }) : new Redis(target.url, common);
}

/** Connects and PINGs, or throws UnavailableError naming the URL. */
export async function connectRedis(url: string): Promise<Redis> {
  const redis = createRedis(url);
  redis.on("error", () => undefined); // reported through the ping below and later command failures
  try {
    await redis.ping();
    return redis;
  } catch (err) {
    redis.disconnect();
    throw new UnavailableError(`cannot reach Redis at ${url}: ${(err as Error).message}`, { cause: err });
  }
}
