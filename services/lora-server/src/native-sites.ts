/**
 * The LoRA server's native site servers together: the shared-memory ring thread (same-host
 * workers, Linux) and the UCX thread (workers on other hosts, started on the first AttachUcx). Both
 * compute with their own copy of the pool's packed weights, replaced on every pool change.
 */
import type { Logger } from "@loramesh/core";
import type { ModelConfig } from "@loramesh/formats";
import { RING_SITE_IDS, RingServer } from "@loramesh/lora-wire";
import type { RingServerStats } from "@loramesh/native";
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
  private readonly logger: Logger;

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
    this.logger = logger;
    this.ringLog = setInterval(() => this.ringStats(), 1_000).unref();
  }

  /**
   * The ring thread's counters now. Every read goes through here: the native call hands each
   * detached worker over once, so it is logged (and the rows passed on) whoever asked.
   */
  ringStats(): RingServerStats | undefined {
    const s = this.ring?.stats();
    for (const detached of s?.detachedWorkers ?? []) this.logger.warn("ring worker detached", { detached });
    if (s) this.onRingRows?.(s.adapterRows);
    return s;
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
    const r = this.ringStats() ?? { nativeCalls: 0, workItems: 0, rows: 0 };
    const u = this.ucx.stats() ?? { nativeCalls: 0, workItems: 0, rows: 0 };
    return { nativeCalls: r.nativeCalls + u.nativeCalls, workItems: r.workItems + u.workItems, rows: r.rows + u.rows };
  }

  stop(): void {
    clearInterval(this.ringLog);
    this.ring?.stop();
    this.ucx.stop();
  }
}
