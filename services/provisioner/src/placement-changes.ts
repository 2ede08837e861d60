/**
 * Placement changes, from one Redis subscription to the placement channel, fanned out to every
 * listener in this process (WatchPlacement streams, load watches).
 */
import { createRedis, REDIS_KEYS } from "@loramesh/mesh";
import type { Redis } from "ioredis";

export class PlacementChanges {
  private readonly listeners = new Set<() => void>();

  private constructor(private readonly subscriber: Redis) {
    subscriber.on("message", () => {
      for (const l of [...this.listeners]) l();
    });
  }

  static async open(redisUrl: string): Promise<PlacementChanges> {
    const subscriber = createRedis(redisUrl);
    subscriber.on("error", () => undefined); // ioredis reconnects and re-subscribes
    await subscriber.subscribe(REDIS_KEYS.channel);
    return new PlacementChanges(subscriber);
  }

  /** Calls `listener` after every change until the returned function is called. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.listeners.clear();
    this.subscriber.disconnect();
  }
}
