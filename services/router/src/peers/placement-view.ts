/** The provisioner's live placement, seen as the router needs it: which base workers can serve what. */
import type { Logger } from "@loramesh/core";
import { PlacementCache } from "@loramesh/mesh";
import { ExecutorKind, LoraMode } from "@loramesh/proto";

export interface WorkerInfo {
  executorId: string;
  address: string;
}

export class PlacementView {
  private readonly cache: PlacementCache;

  constructor(provisionerAddress: string, logger: Logger) {
    this.cache = new PlacementCache(provisionerAddress, logger);
  }

  /** Resolves after the first placement snapshot. */
  get ready(): Promise<void> {
    return this.cache.ready;
  }

  /** Base workers holding the adapter locally (coupled or hybrid). */
  localHolders(adapterId: string | undefined): Set<string> {
    if (adapterId === undefined) return new Set();
    return new Set(this.cache.holdersOf(adapterId, ExecutorKind.EXECUTOR_KIND_BASE_WORKER).map((e) => e.executorId));
  }

  /** Workers able to serve the adapter now: holding it locally, or using a LoRA server that holds it. */
  candidates(adapterId: string | undefined): WorkerInfo[] {
    const all = this.cache.executorsOf(ExecutorKind.EXECUTOR_KIND_BASE_WORKER);
    if (adapterId === undefined) return all;
    const local = this.localHolders(adapterId);
    const remoteOk = this.cache.holdersOf(adapterId, ExecutorKind.EXECUTOR_KIND_LORA_SERVER).length > 0;
    return all.filter((w) => local.has(w.executorId) || (remoteOk && w.loraMode !== LoraMode.LORA_MODE_COUPLED));
  }

  /** Ids of every base worker the placement lists. */
  workerIds(): string[] {
    return this.cache.executorsOf(ExecutorKind.EXECUTOR_KIND_BASE_WORKER).map((e) => e.executorId);
  }

  /** Waits until `check` holds after a placement update (or the timeout passes). */
  until(check: () => boolean, timeoutMs: number): Promise<boolean> {
    return this.cache.until(check, timeoutMs);
  }

  /** Waits until some worker can serve the adapter, or the timeout passes; true when one can. */
  async untilServable(adapterId: string, timeoutMs: number): Promise<boolean> {
    return this.cache.until(() => this.candidates(adapterId).length > 0, timeoutMs);
  }

  close(): void {
    this.cache.close();
  }
}
