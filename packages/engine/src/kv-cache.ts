/**
 * Paged KV cache: per layer a K and a V tensor [blocks, blockSize, kvHeads, headDim] (f32); a
 * sequence owns a list of blocks (its block table) that grows as it does. Blocks are reference
 * counted: with a prefix cache, full blocks of a shared prompt prefix are held by several
 * sequences, and a block whose last holder lets go stays cached (idle) until space is needed, when
 * the least recently used idle block is evicted. Without one, a released block is free at once.
 */
import { f32, type Tensor } from "@loramesh/native";
import { ResourceExhaustedError } from "@loramesh/errors";
import type { PrefixCache } from "./prefix-cache";

export class KvCache {
  readonly layers: Array<{ k: Tensor<"f32">; v: Tensor<"f32"> }>;
  private readonly free: number[];
  private readonly refs: Int32Array;

  constructor(
    numLayers: number,
    readonly numBlocks: number,
    readonly blockSize: number,
    kvHeads: number,
    headDim: number,
    readonly prefix?: PrefixCache,
  ) {
    const shape = [numBlocks, blockSize, kvHeads, headDim];
    this.layers = Array.from({ length: numLayers }, () => ({ k: f32(shape), v: f32(shape) }));
    // Pop from the end: low block numbers are handed out first.
    this.free = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
    this.refs = new Int32Array(numBlocks);
  }

  /** Blocks a sequence can get: free ones plus idle cached ones (evicted on demand). */
  get freeBlocks(): number {
    return this.free.length + (this.prefix?.idleBlocks ?? 0);
  }

  /** Blocks held by sequences. */
  get usedBlocks(): number {
    return this.numBlocks - this.freeBlocks;
  }

  /** Idle blocks kept for the prefix cache. */
  get cachedBlocks(): number {
    return this.prefix?.idleBlocks ?? 0;
  }

  /** Blocks needed to hold `tokens` positions. */
  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.blockSize);
  }

  /** Grows `table` to hold `tokens` positions; false (and no change) when the cache is full. */
  ensure(table: number[], tokens: number): boolean {
    const need = this.blocksFor(tokens) - table.length;
    if (need <= 0) return true;
    if (need > this.freeBlocks) return false;
    for (let i = 0; i < need; i++) {
      const block = this.free.pop() ?? this.prefix?.evict();
      if (block === undefined) throw new ResourceExhaustedError("the KV cache has no block to hand out");
      this.refs[block] = 1;
      table.push(block);
    }
    return true;
  }

  /** Appends cached blocks (a matched prefix) to `table`, holding each once more. */
  share(table: number[], blocks: readonly number[]): void {
    for (const b of blocks) {
      if (this.refs[b] === 0) this.prefix?.take(b);
      this.refs[b] = (this.refs[b] as number) + 1;
      table.push(b);
    }
  }

  /** Lets go of a table's blocks, the last first: a chain's tail is then evicted before its head. */
  release(table: number[]): void {
    for (let i = table.length - 1; i >= 0; i--) {
      const b = table[i] as number;
      const left = (this.refs[b] as number) - 1;
      this.refs[b] = left;
      if (left === 0 && !this.prefix?.park(b)) this.free.push(b);
    }
    table.length = 0;
  }

  /** Slot index of a position in a sequence's table. */
  slot(table: readonly number[], position: number): number {
    const block = table[Math.floor(position / this.blockSize)];
    if (block === undefined) throw new ResourceExhaustedError(`position ${position} has no KV block`);
    return block * this.blockSize + (position % this.blockSize);
  }
}
