/**
 * The LoRA server's adapters: a resident pool (what the kernels compute with) under a byte budget,
 * stored at true rank, with LRU eviction that never evicts pinned adapters; behind it a host cache
 * tier of recently evicted adapters (parsed and validated), so a returning adapter does not go back
 * to storage. With layer-wise loading an adapter read from storage counts as resident (heartbeats
 * report it, so requests are admitted) from the moment its hash is checked, and its layers become
 * usable one by one: `layers` (a LayerGate) holds site calls for a layer not yet resident.
 */
import { FailedPreconditionError, ResourceExhaustedError } from "@loramesh/errors";
import { type Logger } from "@loramesh/core";
import {
  LayerGate,
  LocalLoraBackend,
  loadAdapter,
  openAdapterLayerwise,
  publishLayers,
  type LoraAdapter,
} from "@loramesh/engine";
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
  /** Load from storage layer by layer, serving early layers while later ones load (default on). */
  layerwise?: boolean;
  /** Told (and awaited) each time a layer-wise load makes another layer resident. */
  onLayerResident?: (id: string, readyLayers: number, numLayers: number) => void | Promise<void>;
}

export class AdapterPool {
  readonly backend: LocalLoraBackend;
  /** Layers of adapters still loading; site calls wait here for the layer they need. */
  readonly layers = new LayerGate();
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
  private readonly options: AdapterPoolOptions;

  constructor(options: AdapterPoolOptions) {
    this.options = options;
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
    } else if (this.options.layerwise ?? true) {
      return this.loadLayerwise(id, dir, contentHash, pin, progress);
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
    this.layers.abort(id, "unloaded while loading");
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
        .filter(([id, r]) => !r.pinned && !this.layers.isLoading(id))
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

  /**
   * Reads the adapter from storage one layer at a time. It is resident (and reported) once its hash
   * checks out; each layer is published to the kernels, then waiting site calls for it go on.
   */
  private async loadLayerwise(
    id: string,
    dir: string,
    contentHash: string,
    pin: boolean,
    progress: (p: number) => Promise<void>,
  ): Promise<{ sizeBytes: number; alreadyResident: boolean }> {
    await progress(0.1);
    const reader = await openAdapterLayerwise(dir, this.model);
    const { adapter } = reader;
    let began = false; // this load owns the id's layer gate (a racing load of the same id may not)
    try {
      this.loadsFromStorage++;
      if (contentHash !== "" && adapter.contentHash !== contentHash) {
        throw new FailedPreconditionError(
          `adapter files in ${dir} changed since registration (content hash ${adapter.contentHash.slice(0, 12)}, expected ${contentHash.slice(0, 12)})`,
        );
      }
      const raced = this.resident.get(id); // another load of the same id finished meanwhile
      if (raced) return { sizeBytes: raced.adapter.sizeBytes, alreadyResident: true };
      this.makeRoom(adapter.sizeBytes, id);
      this.layers.begin(id);
      began = true;
      this.resident.set(id, { adapter, pinned: pin, lastUsed: ++this.clock });
      this.backend.add(id, adapter);
      this.onChange();
      await publishLayers({
        id,
        reader,
        backend: this.backend,
        gate: this.layers,
        stillLoading: () => this.resident.get(id)?.adapter === adapter,
        ...(this.options.onLayerResident ? { onLayerResident: this.options.onLayerResident } : {}),
        progress: (f) => progress(0.1 + 0.9 * f),
      });
      this.onChange(); // the whole adapter is resident now (the shared-memory ring serves it from here)
    } catch (err) {
      if (began) this.layers.abort(id, "its load failed");
      if (this.resident.get(id)?.adapter === adapter) {
        this.resident.delete(id);
        this.backend.remove(id);
        this.onChange();
      }
      throw err;
    } finally {
      reader.close();
    }
    this.logger.info("adapter resident", {
      adapterId: id,
      bytes: adapter.sizeBytes,
      rank: adapter.rank,
      layerwise: true,
    });
    return { sizeBytes: adapter.sizeBytes, alreadyResident: false };
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
