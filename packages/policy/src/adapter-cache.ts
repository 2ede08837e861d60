/**
 * The adapters resident on one GPU (an executor or a LoRA server), least recently used first. A load
 * takes time (host → GPU); with layer-wise loading a request may start once the first layer is in.
 * Adapters that running requests use are pinned and never evicted. `room` lets the KV cache claim
 * bytes from the same pool (S-LoRA-style unified paging).
 */
export interface CacheEntry {
  bytes: number;
  /** When the whole adapter, and its first layer, are on the GPU. */
  readyAt: number;
  firstLayerAt: number;
  pins: number;
}

export class AdapterCache {
  readonly entries = new Map<string, CacheEntry>();
  used = 0;
  loads = 0;

  /** `capacity()` is read each time: a unified pool shrinks as KV grows. */
  constructor(readonly capacity: () => number) {}

  get(id: string): CacheEntry | undefined {
    const e = this.entries.get(id);
    if (e) {
      // Most recently used last.
      this.entries.delete(id);
      this.entries.set(id, e);
    }
    return e;
  }

  /**
   * Evicts unpinned adapters (oldest first) until `bytes` more fit; false when they cannot. A load
   * still in flight at `now` is not evicted: its request has not had the chance to start.
   */
  makeRoom(bytes: number, now = Infinity): boolean {
    if (this.used + bytes <= this.capacity()) return true;
    for (const [id, e] of this.entries) {
      if (e.pins > 0 || e.readyAt > now) continue;
      this.entries.delete(id);
      this.used -= e.bytes;
      if (this.used + bytes <= this.capacity()) return true;
    }
    return this.used + bytes <= this.capacity();
  }

  /** Evicts unpinned adapters until at most `limit` bytes are used; false when pins prevent it. */
  shrinkTo(limit: number): boolean {
    if (this.used <= limit) return true;
    for (const [id, e] of this.entries) {
      if (e.pins > 0) continue;
      this.entries.delete(id);
      this.used -= e.bytes;
      if (this.used <= limit) return true;
    }
    return this.used <= limit;
  }

  /** Resident at once (initial placement). */
  put(id: string, bytes: number): boolean {
    if (this.entries.has(id)) return true;
    if (!this.makeRoom(bytes)) return false;
    this.entries.set(id, { bytes, readyAt: 0, firstLayerAt: 0, pins: 0 });
    this.used += bytes;
    return true;
  }

  /** Starts a load at `now` taking `seconds`; undefined when no room can be made. */
  load(id: string, bytes: number, now: number, seconds: number, layers: number): CacheEntry | undefined {
    const existing = this.get(id);
    if (existing) return existing;
    if (!this.makeRoom(bytes, now)) return undefined;
    const entry = { bytes, readyAt: now + seconds, firstLayerAt: now + seconds / Math.max(1, layers), pins: 0 };
    this.entries.set(id, entry);
    this.used += bytes;
    this.loads++;
    return entry;
  }
}
