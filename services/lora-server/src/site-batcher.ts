/**
 * Cross-worker batching: work items for the same (layer, site) from several workers are merged
 * into one native batched-LoRA call, then each item gets its own rows of the delta back.
 *
 * An item waits (at most `windowMs`) until every other recently active worker has sent its item
 * for the same site, or flushes at once when it is the only active worker. Workers block on the
 * answer at every site, so this quickly puts them in step and most calls carry all of them.
 */
import { NotFoundError } from "@loramesh/core";
import { f32 } from "@loramesh/native";
import type { LoraSite } from "@loramesh/engine";
import type { AdapterPool } from "./adapter-pool";

export interface WorkItem {
  layer: number;
  site: LoraSite;
  /** Input rows [rows, hIn]. */
  x: Float32Array;
  rows: number;
  hIn: number;
  nOut: number;
  /** Global adapter id per row (undefined: none). */
  rowAdapterIds: Array<string | undefined>;
  /** MoE: expert per row. */
  rowExpert: Int32Array | undefined;
}

interface Pending {
  item: WorkItem;
  stream: number;
  resolve: (delta: Float32Array) => void;
  reject: (err: unknown) => void;
}

export interface BatcherStats {
  nativeCalls: number;
  workItems: number;
  rows: number;
}

export class SiteBatcher {
  private readonly pending = new Map<string, Pending[]>();
  private readonly busy = new Set<string>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly lastSeen = new Map<number, number>();
  readonly stats: BatcherStats = { nativeCalls: 0, workItems: 0, rows: 0 };

  constructor(
    private readonly pool: AdapterPool,
    /** Longest an item waits for other workers' items for the same site. */
    private readonly windowMs = 2,
    /** A worker counts as active if it sent work this recently. */
    private readonly activeMs = 100,
  ) {}

  /** Forgets a closed stream. */
  closeStream(stream: number): void {
    this.lastSeen.delete(stream);
  }

  /** Resolves with the delta [rows, nOut] for this item's rows. */
  submit(item: WorkItem, stream = 0): Promise<Float32Array> {
    const key = `${item.layer}/${item.site}/${item.rowExpert ? "moe" : "dense"}/${item.hIn}/${item.nOut}`;
    this.lastSeen.set(stream, performance.now());
    return new Promise((resolve, reject) => {
      const list = this.pending.get(key) ?? [];
      list.push({ item, stream, resolve, reject });
      this.pending.set(key, list);
      this.maybeFlush(key);
    });
  }

  private maybeFlush(key: string): void {
    if (this.busy.has(key)) return; // the running call drains the queue when it ends
    const list = this.pending.get(key) ?? [];
    if (list.length === 0) return;
    const now = performance.now();
    const active = [...this.lastSeen.entries()].filter(([, t]) => now - t <= this.activeMs).map(([s]) => s);
    const present = new Set(list.map((p) => p.stream));
    if (active.every((s) => present.has(s))) {
      this.flush(key);
    } else if (!this.timers.has(key)) {
      this.timers.set(
        key,
        setTimeout(() => this.flush(key), this.windowMs),
      );
    }
  }

  private flush(key: string): void {
    const timer = this.timers.get(key);
    if (timer) clearTimeout(timer);
    this.timers.delete(key);
    if (this.busy.has(key)) return;
    this.busy.add(key);
    void this.drain(key);
  }

  private async drain(key: string): Promise<void> {
    try {
      const batch = this.pending.get(key) ?? [];
      this.pending.delete(key);
      if (batch.length > 0) await this.run(batch);
    } finally {
      this.busy.delete(key);
      this.maybeFlush(key);
    }
  }

  private async run(all: Pending[]): Promise<void> {
    // An item naming an adapter that is not (or no longer) resident fails alone.
    const batch = all.filter((p) => {
      const missing = p.item.rowAdapterIds.find((id) => id !== undefined && !this.pool.has(id));
      if (missing !== undefined) p.reject(new NotFoundError(`adapter ${missing} is not resident on this LoRA server`));
      return missing === undefined;
    });
    if (batch.length === 0) return;
    const first = batch[0]?.item as WorkItem;
    const { hIn, nOut } = first;
    const rows = batch.reduce((s, p) => s + p.item.rows, 0);
    const x = new Float32Array(rows * hIn);
    const adapters: string[] = [];
    const rowAdapter = new Int32Array(rows);
    const moe = first.rowExpert !== undefined;
    const rowExpert = moe ? new Int32Array(rows) : undefined;
    let r = 0;
    for (const { item } of batch) {
      x.set(item.x, r * hIn);
      item.rowAdapterIds.forEach((id, j) => {
        let index = -1;
        if (id !== undefined) {
          index = adapters.indexOf(id);
          if (index < 0) index = adapters.push(id) - 1;
        }
        rowAdapter[r + j] = index;
        if (rowExpert && item.rowExpert) rowExpert[r + j] = item.rowExpert[j] as number;
      });
      r += item.rows;
    }
    const y = f32([rows, nOut]);
    try {
      this.pool.touch(adapters);
      await this.pool.backend.apply({
        layer: first.layer,
        site: first.site,
        x: f32([rows, hIn], x),
        y,
        adapters,
        rowAdapter,
        ...(rowExpert ? { rowExpert } : {}),
      });
      this.stats.nativeCalls++;
      this.stats.workItems += batch.length;
      this.stats.rows += rows;
      let offset = 0;
      for (const p of batch) {
        p.resolve(y.data.slice(offset * nOut, (offset + p.item.rows) * nOut));
        offset += p.item.rows;
      }
    } catch (err) {
      for (const p of batch) p.reject(err);
    }
  }
}
