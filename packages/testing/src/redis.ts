import { startEmbeddedRedis, type EmbeddedRedis } from "@loramesh/core";
import { Redis } from "ioredis";

/**
 * A private Redis for one test run (the system's redis-server on a unix socket in a temp dir).
 * Tests share it and isolate themselves with `flushall` or distinct key prefixes.
 */
export interface TestRedis extends EmbeddedRedis {
  /** A new ioredis client on the private server; closed by `stop()`. */
  client(): Redis;
}

export async function startTestRedis(): Promise<TestRedis> {
  const redis = await startEmbeddedRedis();
  const clients: Redis[] = [];
  return {
    url: redis.url,
    socketPath: redis.socketPath,
    get pid() {
      return redis.pid;
    },
    get running() {
      return redis.running;
    },
    exited: () => redis.exited(),
    restart: () => redis.restart(),
    client() {
      const client = new Redis({ path: redis.socketPath, maxRetriesPerRequest: 1 });
      clients.push(client);
      return client;
    },
    async stop() {
      for (const client of clients) client.disconnect();
      await redis.stop();
    },
  };
}
