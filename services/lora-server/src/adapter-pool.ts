/**
 * The LoRA server's adapters: a resident pool (what the kernels compute with) under a byte budget,
 * stored at true rank, with LRU eviction that never evicts pinned adapters; behind it a host cache
 * tier of recently evicted adapters (parsed and validated), so a returning adapter does not go back
 * to storage.
 */
import { FailedPreconditionError, ResourceExhaustedError } from "@loramesh/errors";
import { type Logger } from "@loramesh/core";
import { LocalLoraBackend, loadAdapter, type LoraAdapter } from "@loramesh/engine";
import { type ModelConfig } from "@loramesh/formats";

interface Resident {
  adapter: LoraAdapter;
  pinned: boolean;
  lastUsed: number;
}

export interface PoolStats {
  residentIds: string[];
  bytesUsed: number;
  bytesCapacity: number;
  evictions: number;
  hostCacheIds: string[];
  loadsFromStorage: number;
  loadsFromHostCache: number;
}

export interface AdapterPoolOptions {
  model: ModelConfig;
  /** Budget of resident adapters. */
  capacityBytes: number;
  /** Budget of the host cache tier behind the pool. */
  hostCacheBytes: number;
  logger: Logger;
  /** Called when the resident set changes (the agent heartbeats at once). */
  onChange?: () => void;
}

export class AdapterPool {
  readonly backend: LocalLoraBackend;
  private readonly resident = new Map<string, Resident>();
  private readonly hostCache = new Map<string, LoraAdapter>(); // insertion order = LRU order
  private evictions = 0;
  private loadsFromStorage = 0;
  private loadsFromHostCache = 0;
  private clock = 0;

  private readonly model: ModelConfig;
  readonly capacityBytes: number;
  readonly hostCacheBytes: number;
  private readonly logger: Logger;
  private readonly onChange: () => void;

  constructor(options: AdapterPoolOptions) {
    this.model = options.model;
    this.capacityBytes = options.capacityBytes;
    this.hostCacheBytes = options.hostCacheBytes;
    this.logger = options.logger;
    this.onChange = options.onChange ?? (() => undefined);
    this.backend = new LocalLoraBackend(options.model);
  }

  has(id: string): boolean {
    return this.resident.has(id);
  }

  /** Marks adapters as used (LRU order). */
  touch(ids: readonly string[]): void {
    for (const id of ids) {
      const r = this.resident.get(id);
      if (r) r.lastUsed = ++this.clock;
    }
  }

  /** Makes an adapter resident (idempotent). Returns its size and whether it already was. */
  async load(
    id: string,
    dir: string,
    contentHash: string,
    pin: boolean,
    progress: (p: number) => Promise<void> = async () => undefined,
  ): Promise<{ sizeBytes: number; alreadyResident: boolean }> {
    const existing = this.resident.get(id);
    if (existing) {
      existing.pinned ||= pin;
      existing.lastUsed = ++this.clock;
      return { sizeBytes: existing.adapter.sizeBytes, alreadyResident: true };
    }
    let adapter = this.hostCache.get(id);
    if (adapter) {
      this.hostCache.delete(id);
      this.loadsFromHostCache++;
    } else {
      await progress(0.1);
      adapter = loadAdapter(dir, this.model);
      this.loadsFromStorage++;
      if (contentHash !== "" && adapter.contentHash !== contentHash) {
        throw new FailedPreconditionError(
          `adapter files in ${dir} changed since registration (content hash ${adapter.contentHash.slice(0, 12)}, expected ${contentHash.slice(0, 12)})`,
        );
      }
    }
    await progress(0.6);
    this.makeRoom(adapter.sizeBytes, id);
    this.resident.set(id, { adapter, pinned: pin, lastUsed: ++this.clock });
    this.backend.add(id, adapter);
    await progress(1);
    this.logger.info("adapter resident", { adapterId: id, bytes: adapter.sizeBytes, rank: adapter.rank });
    this.onChange();
    return { sizeBytes: adapter.sizeBytes, alreadyResident: false };
  }

  unload(id: string): boolean {
    const r = this.resident.get(id);
    this.hostCache.delete(id);
    if (!r) return false;
    this.resident.delete(id);
    this.backend.remove(id);
    this.onChange();
    return true;
  }

  get bytesUsed(): number {
    let n = 0;
    for (const r of this.resident.values()) n += r.adapter.sizeBytes;
    return n;
  }

  stats(): PoolStats {
    return {
      residentIds: [...this.resident.keys()].sort(),
      bytesUsed: this.bytesUsed,
      bytesCapacity: this.capacityBytes,
      evictions: this.evictions,
      hostCacheIds: [...this.hostCache.keys()],
      loadsFromStorage: this.loadsFromStorage,
      loadsFromHostCache: this.loadsFromHostCache,
    };
  }

  private makeRoom(bytes: number, forId: string): void {
    if (bytes > this.capacityBytes)
      throw new ResourceExhaustedError(
        `adapter ${forId} needs ${bytes} bytes, more than the pool's ${this.capacityBytes}`,
      );
    while (this.bytesUsed + bytes > this.capacityBytes) {
      const victim = [...this.resident.entries()]
        .filter(([, r]) => !r.pinned)
        .sort((a, b) => a[1].lastUsed - b[1].lastUsed)[0];
      if (!victim)
        throw new ResourceExhaustedError(`no room for adapter ${forId}: the pool is full of pinned adapters`);
      const [id, r] = victim;
      this.resident.delete(id);
      this.backend.remove(id);
      this.evictions++;
      this.toHostCache(id, r.adapter);
      this.logger.info("adapter evicted to the host cache", { adapterId: id });
    }
  }

  private toHostCache(id: string, adapter: LoraAdapter): void {
    this.hostCache.set(id, adapter);
    let bytes = 0;
    for (const a of this.hostCache.values()) bytes += a.sizeBytes;
    for (const [oldId, a] of this.hostCache) {
      if (bytes <= this.hostCacheBytes) break;
      this.hostCache.delete(oldId);
      bytes -= a.sizeBytes;
    }
  }
}
