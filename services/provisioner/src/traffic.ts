/**
 * Per-adapter traffic shares for placement, from the request counters workers report in their
 * heartbeats (REDIS_KEYS.traffic). Each read turns the counters' growth into a rate, smoothed with
 * an exponential moving average so that a drift in popularity shows within a few half-lives.
 */
import { REDIS_KEYS } from "@loramesh/mesh";
import type { Redis } from "ioredis";

export class TrafficShares {
  private readonly lastCount = new Map<string, number>();
  private readonly rate = new Map<string, number>();
  private lastReadMs = 0;
  /** Smoothed requests per second over all adapters (after the second read). */
  requestsPerSecond = 0;

  constructor(
    private readonly redis: Redis,
    private readonly halfLifeMs = 30_000,
  ) {}

  /** Share of recent requests per adapter; all zero until traffic has been seen. */
  async read(adapterIds: readonly string[], nowMs = Date.now()): Promise<Map<string, number>> {
    const counts = await requestCounts(this.redis, adapterIds);
    const first = this.lastReadMs === 0;
    const dt = Math.max(1, nowMs - this.lastReadMs);
    // Weight of the newest interval: 1 - 2^(-dt / halfLife).
    const weight = first ? 1 : 1 - Math.pow(2, -dt / this.halfLifeMs);
    adapterIds.forEach((id, i) => {
      const count = counts[i] as number;
      const previous = this.lastCount.get(id) ?? (first ? 0 : count);
      const perSecond = first ? count : (Math.max(0, count - previous) * 1000) / dt;
      this.rate.set(id, (1 - weight) * (this.rate.get(id) ?? 0) + weight * perSecond);
      this.lastCount.set(id, count);
    });
    const current = new Set(adapterIds);
    for (const id of [...this.rate.keys()]) {
      if (current.has(id)) continue;
      this.rate.delete(id);
      this.lastCount.delete(id);
    }
    this.lastReadMs = nowMs;
    const total = adapterIds.reduce((s, id) => s + (this.rate.get(id) ?? 0), 0);
    if (!first) this.requestsPerSecond = total;
    return new Map(adapterIds.map((id) => [id, total > 0 ? (this.rate.get(id) ?? 0) / total : 0]));
  }
}

/** Cumulative requests per adapter (as workers reported them), in one round trip. */
export async function requestCounts(redis: Redis, adapterIds: readonly string[]): Promise<number[]> {
  if (adapterIds.length === 0) return [];
  const pipeline = redis.pipeline();
  for (const id of adapterIds) pipeline.hget(REDIS_KEYS.traffic(id), "requests");
  return ((await pipeline.exec()) ?? []).map(([err, n]) => {
    if (err) throw err;
    return Number(n ?? 0);
  });
}
