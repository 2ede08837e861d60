/**
 * Cross-worker batching: work items for the same (layer, site) that arrive from several workers
 * while the previous call for that site is running (or in the same event-loop turn) are merged into
 * one native batched-LoRA call, then each item gets its own rows of the delta back.
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
  readonly stats: BatcherStats = { nativeCalls: 0, workItems: 0, rows: 0 };

  constructor(private readonly pool: AdapterPool) {}

  /** Resolves with the delta [rows, nOut] for this item's rows. */
  submit(item: WorkItem): Promise<Float32Array> {
    const key = `${item.layer}/${item.site}/${item.rowExpert ? "moe" : "dense"}/${item.hIn}/${item.nOut}`;
    return new Promise((resolve, reject) => {
      const list = this.pending.get(key) ?? [];
      list.push({ item, resolve, reject });
      this.pending.set(key, list);
      if (!this.busy.has(key)) {
        this.busy.add(key);
        // Let items from other streams that arrive in this turn join the batch.
        setImmediate(() => void this.drain(key));
      }
    });
  }

  private async drain(key: string): Promise<void> {
    try {
      for (;;) {
        const batch = this.pending.get(key) ?? [];
        this.pending.delete(key);
        if (batch.length === 0) return;
        await this.run(batch);
      }
    } finally {
      this.busy.delete(key);
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
