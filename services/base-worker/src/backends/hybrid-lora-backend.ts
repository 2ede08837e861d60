/**
 * Hybrid mode: rows whose adapter is resident on this worker run locally, the rest remotely; both
 * halves run at once and write disjoint rows.
 */
import type { LoraBackend, LoraSiteCall } from "@loramesh/engine";
import type { SiteBackendHandle } from "@loramesh/native";

export class HybridLoraBackend implements LoraBackend {
  private readonly local: LoraBackend;
  private readonly remote: LoraBackend;

  constructor(options: { local: LoraBackend; remote: LoraBackend }) {
    this.local = options.local;
    this.remote = options.remote;
  }

  has(adapterId: string): boolean {
    return this.local.has(adapterId) || this.remote.has(adapterId);
  }

  contentHash(adapterId: string): string | undefined {
    return this.local.has(adapterId) ? this.local.contentHash?.(adapterId) : this.remote.contentHash?.(adapterId);
  }

  /** Whether this call's rows use the local half, the remote half, or both. */
  halves(call: Pick<LoraSiteCall, "adapters" | "rowAdapter">): { local: boolean; remote: boolean } {
    const isLocal = call.adapters.map((id) => this.local.has(id));
    let local = false;
    let remote = false;
    for (const a of call.rowAdapter) {
      if (a < 0) continue;
      if (isLocal[a]) local = true;
      else remote = true;
    }
    return { local, remote };
  }

  /** Remote adapters with a same-host ring go there from the step's thread; local ones through `apply`. */
  stepSiteBackend(adapters: readonly string[], fallback: () => SiteBackendHandle): SiteBackendHandle | undefined {
    const remote = adapters.filter((id) => !this.local.has(id));
    return remote.length > 0 ? this.remote.stepSiteBackend?.(remote, fallback) : undefined;
  }

  stepSiteFailed(backend: SiteBackendHandle, err: unknown): void {
    this.remote.stepSiteFailed?.(backend, err);
  }

  async apply(call: LoraSiteCall): Promise<void> {
    const isLocal = call.adapters.map((id) => this.local.has(id));
    const localRows = call.rowAdapter.map((a) => (a >= 0 && isLocal[a] ? a : -1));
    const remoteRows = call.rowAdapter.map((a) => (a >= 0 && !isLocal[a] ? a : -1));
    const jobs: Array<Promise<void>> = [];
    if (localRows.some((a) => a >= 0)) jobs.push(this.local.apply({ ...call, rowAdapter: Int32Array.from(localRows) }));
    if (remoteRows.some((a) => a >= 0))
      jobs.push(this.remote.apply({ ...call, rowAdapter: Int32Array.from(remoteRows) }));
    await Promise.all(jobs);
  }
}
