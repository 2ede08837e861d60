/**
 * Paged KV cache: per layer a K and a V tensor [blocks, blockSize, kvHeads, headDim] (f32); a
 * sequence owns a list of blocks (its block table) that grows as it does, and gives them all back
 * when it finishes or is cancelled. Blocks are shared by nothing else, so freeing is exact.
 */
import { f32, type Tensor } from "@loramesh/native";
import { ResourceExhaustedError } from "@loramesh/errors";

export class KvCache {
  readonly layers: Array<{ k: Tensor<"f32">; v: Tensor<"f32"> }>;
  private readonly free: number[];

  constructor(
    numLayers: number,
    readonly numBlocks: number,
    readonly blockSize: number,
    kvHeads: number,
    headDim: number,
  ) {
    const shape = [numBlocks, blockSize, kvHeads, headDim];
    this.layers = Array.from({ length: numLayers }, () => ({ k: f32(shape), v: f32(shape) }));
    // Pop from the end: low block numbers are handed out first.
    this.free = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }

  get freeBlocks(): number {
    return this.free.length;
  }

  get usedBlocks(): number {
    return this.numBlocks - this.free.length;
  }

  /** Blocks needed to hold `tokens` positions. */
  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.blockSize);
  }

  /** Grows `table` to hold `tokens` positions; false (and no change) when the cache is full. */
  ensure(table: number[], tokens: number): boolean {
    const need = this.blocksFor(tokens) - table.length;
    if (need <= 0) return true;
    if (need > this.free.length) return false;
    for (let i = 0; i < need; i++) table.push(this.free.pop() as number);
    return true;
  }

  release(table: number[]): void {
    for (const b of table) this.free.push(b);
    table.length = 0;
  }

  /** Slot index of a position in a sequence's table. */
  slot(table: readonly number[], position: number): number {
    const block = table[Math.floor(position / this.blockSize)];
    if (block === undefined) throw new ResourceExhaustedError(`position ${position} has no KV block`);
    return block * this.blockSize + (position % this.blockSize);
  }
}
