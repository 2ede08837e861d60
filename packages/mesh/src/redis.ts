import { redisConnectionOptions } from "@loramesh/core";
import { UnavailableError } from "@loramesh/errors";
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

/**
 * ioredis options for a REDIS_URL, for libraries that create (and close) their own connections,
 * such as BullMQ: `unix:/path` or `redis[s]://[user:password@]host:port[/db]`.
 */
export function redisOptionsFromUrl(url: string): RedisOptions {
  const target = redisConnectionOptions(url);
  if ("path" in target) return { path: target.path, maxRetriesPerRequest: null };
  const u = new URL(target.url);
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0;
  return {
    host: u.hostname,
    port: u.port ? Number(u.port) : 6379,
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    db,
    ...(u.protocol === "rediss:" ? { tls: {} } : {}),
    maxRetriesPerRequest: null,
  };
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
