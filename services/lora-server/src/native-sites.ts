/**
 * The LoRA server's native site servers together: the shared-memory ring thread (same-host
 * workers, Linux) and the UCX thread (workers on other hosts, started on the first AttachUcx). Both
 * compute with their own copy of the pool's packed weights, replaced on every pool change.
 */
import type { Logger } from "@loramesh/core";
import type { ModelConfig } from "@loramesh/formats";
import { RING_SITE_IDS, RingServer } from "@loramesh/lora-wire";
import type { AdapterPool } from "./adapter-pool";
import { UcxSites } from "./ucx-sites";

export interface SiteCounters {
  nativeCalls: number;
  workItems: number;
  rows: number;
}

export class NativeSites {
  readonly ring: RingServer | undefined;
  readonly ucx: UcxSites;
  /** Receives the ring thread's rows per adapter once a second (for the per-adapter metrics). */
  onRingRows: ((rows: Record<string, number>) => void) | undefined;
  private readonly ringLog: NodeJS.Timeout;

  constructor(
    model: ModelConfig,
    options: { hostId: string; batchWindowMs: number; ringTimeoutMs?: number },
    logger: Logger,
  ) {
    this.ring =
      process.platform === "linux"
        ? new RingServer({
            model,
            hostId: options.hostId,
            windowMs: options.batchWindowMs,
            ...(options.ringTimeoutMs !== undefined ? { siteTimeoutMs: options.ringTimeoutMs } : {}),
          })
        : undefined;
    this.ucx = new UcxSites(model, logger);
    this.ringLog = setInterval(() => {
      const s = this.ring?.stats();
      for (const detached of s?.detachedWorkers ?? []) logger.warn("ring worker detached", { detached });
      if (s) this.onRingRows?.(s.adapterRows);
    }, 1_000).unref();
  }

  /**
   * Hands both threads the pool's packed weights. An adapter still loading layer by layer is left
   * out (its sites then go through the stream, which waits for each layer), and added when its
   * last layer is resident.
   */
  setTables(pool: AdapterPool): void {
    const slots = pool.backend.slotIds().map((id) => (pool.layers.isLoading(id) ? "" : id));
    const sites = pool.backend.packedSites().map((s) => ({ ...s, site: RING_SITE_IDS[s.site] }));
    this.ring?.setTables(slots, sites);
    this.ucx.setTables(slots, sites);
  }

  /** What both threads computed, summed. */
  stats(): SiteCounters {
    const r = this.ring?.stats() ?? { nativeCalls: 0, workItems: 0, rows: 0 };
    const u = this.ucx.stats() ?? { nativeCalls: 0, workItems: 0, rows: 0 };
    return { nativeCalls: r.nativeCalls + u.nativeCalls, workItems: r.workItems + u.workItems, rows: r.rows + u.rows };
  }

  stop(): void {
    clearInterval(this.ringLog);
    this.ring?.stop();
    this.ucx.stop();
  }
}
