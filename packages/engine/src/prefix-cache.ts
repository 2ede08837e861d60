/**
 * Adapter-aware prefix cache: an index from the hash chain of a sequence's full KV blocks to the
 * blocks that hold them, so a later sequence with the same prompt prefix under the same weights
 * reuses them instead of recomputing. A block's hash covers the key (the base model, or the
 * adapter's content hash) and every token up to the block's end, so a prefix computed under one
 * adapter (or version, or the base) is never found by another. Blocks nobody holds stay indexed in
 * LRU order until the KV cache needs them back.
 */
import { createHash } from "node:crypto";

/** The prefix key of the base model (adapters use their content hash). */
export const BASE_PREFIX_KEY = "base";

/** Hit counts of one adapter (or the base): prompt tokens looked up and found cached. */
export interface PrefixCacheCounts {
  lookups: number;
  queriedTokens: number;
  hitTokens: number;
}

export interface PrefixCacheStats {
  /** Blocks indexed (held by sequences or idle). */
  indexedBlocks: number;
  /** Indexed blocks no sequence holds (evictable). */
  idleBlocks: number;
  evictions: number;
  /** Per adapter label ("base" for the base model). */
  byAdapter: Record<string, PrefixCacheCounts>;
}

/** The chain root for a key: every block hash below it depends on the key. */
function rootHash(key: string): string {
  return createHash("sha256").update("loramesh-prefix/v1\0").update(key).digest("hex");
}

/**
 * Extends `hashes` (the chain already computed for `tokens`) to cover `fullBlocks` blocks: block i's
 * hash is SHA-256(hash of block i−1 or the key's root, its tokens).
 */
export function extendBlockHashes(
  hashes: string[],
  key: string,
  tokens: readonly number[],
  blockSize: number,
  fullBlocks: number,
): void {
  for (let i = hashes.length; i < fullBlocks; i++) {
    const ids = Uint32Array.from(tokens.slice(i * blockSize, (i + 1) * blockSize));
    const parent = i === 0 ? rootHash(key) : (hashes[i - 1] as string);
    hashes.push(createHash("sha256").update(parent).update(new Uint8Array(ids.buffer)).digest("hex"));
  }
}

export class PrefixCache {
  private readonly blockOf = new Map<string, number>();
  private readonly hashOf = new Map<number, string>();
  /** Indexed blocks with no holder, least recently released first (Set order). */
  private readonly idle = new Set<number>();
  private evictions = 0;
  private readonly counts = new Map<string, PrefixCacheCounts>();

  /** Blocks of the longest cached run of `hashes` from the start. */
  match(hashes: readonly string[]): number[] {
    const blocks: number[] = [];
    for (const h of hashes) {
      const b = this.blockOf.get(h);
      if (b === undefined) break;
      blocks.push(b);
    }
    return blocks;
  }

  /** Counts one lookup for the hit-rate metrics. */
  record(label: string, queriedTokens: number, hitTokens: number): void {
    const c = this.counts.get(label) ?? { lookups: 0, queriedTokens: 0, hitTokens: 0 };
    c.lookups++;
    c.queriedTokens += queriedTokens;
    c.hitTokens += hitTokens;
    this.counts.set(label, c);
  }

  /** Indexes a block just filled; false when the hash or the block is already indexed. */
  register(block: number, hash: string): boolean {
    if (this.blockOf.has(hash) || this.hashOf.has(block)) return false;
    this.blockOf.set(hash, block);
    this.hashOf.set(block, hash);
    return true;
  }

  /** A block's last holder let it go: true when it stays cached (idle), false when it must be freed. */
  park(block: number): boolean {
    if (!this.hashOf.has(block)) return false;
    this.idle.add(block);
    return true;
  }

  /** A cached block is held again. */
  take(block: number): void {
    this.idle.delete(block);
  }

  get idleBlocks(): number {
    return this.idle.size;
  }

  /** Drops the least recently used idle block from the index and returns it for reuse. */
  evict(): number | undefined {
    const first = this.idle.values().next();
    if (first.done === true) return undefined;
    const block = first.value;
    this.idle.delete(block);
    this.blockOf.delete(this.hashOf.get(block) as string);
    this.hashOf.delete(block);
    this.evictions++;
    return block;
  }

  stats(): PrefixCacheStats {
    const byAdapter: Record<string, PrefixCacheCounts> = {};
    for (const [label, c] of this.counts) byAdapter[label] = { ...c };
    return { indexedBlocks: this.hashOf.size, idleBlocks: this.idle.size, evictions: this.evictions, byAdapter };
  }
}
