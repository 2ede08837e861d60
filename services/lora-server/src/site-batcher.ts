import { NotFoundError } from "@loramesh/errors";
import type { LoraSite } from "@loramesh/formats";
import { f32 } from "@loramesh/native";
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
  arrived: number;
  resolve: (delta: Float32Array) => void;
  reject: (err: unknown) => void;
}

export interface BatcherStats {
  nativeCalls: number;
  workItems: number;
  rows: number;
}

export interface SiteBatcherOptions {
  pool: AdapterPool;
  /** Longest an item waits for other workers' items for the same site. */
  windowMs?: number;
  /** A worker counts as active if it sent work this recently. */
  activeMs?: number;
}

/**
 * Cross-worker batching: work items for the same (layer, site) from several workers are merged
 * into one native batched-LoRA call, then each item gets its own rows of the delta back.
 *
 * Calls run one at a time (they share the CPU pool anyway). What runs next:
 * - when every recently active worker is blocked on an item, nothing more can arrive: run the
 *   earliest site (lowest layer, then q/k/v before o before gate/up before down). A worker that
 *   lags behind gets to catch up, and workers fall into step, so later calls carry all of them;
 * - otherwise wait up to `windowMs` for the busy workers, then run whatever has waited that long.
 */
const SITE_ORDER: Record<LoraSite, number> = { qkv: 0, o: 1, gate_up: 2, down: 3 };

export class SiteBatcher {
  private readonly pending = new Map<string, Pending[]>();
  private readonly lastSeen = new Map<number, number>();
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  readonly stats: BatcherStats = { nativeCalls: 0, workItems: 0, rows: 0 };

  private readonly pool: AdapterPool;
  private readonly windowMs: number;
  private readonly activeMs: number;

  constructor(options: SiteBatcherOptions) {
    this.pool = options.pool;
    this.windowMs = options.windowMs ?? 2;
    this.activeMs = options.activeMs ?? 100;
  }

  /** Forgets a closed stream. */
  closeStream(stream: number): void {
    this.lastSeen.delete(stream);
    this.next();
  }

  /** Resolves with the delta [rows, nOut] for this item's rows. */
  submit(item: WorkItem, stream = 0): Promise<Float32Array> {
    const key = `${item.layer}/${item.site}/${item.rowExpert ? "moe" : "dense"}/${item.hIn}/${item.nOut}`;
    const now = performance.now();
    this.lastSeen.set(stream, now);
    return new Promise((resolve, reject) => {
      const list = this.pending.get(key) ?? [];
      list.push({ item, stream, arrived: now, resolve, reject });
      this.pending.set(key, list);
      this.next();
    });
  }

  private order(key: string): number {
    const first = this.pending.get(key)?.[0]?.item as WorkItem;
    return first.layer * 4 + SITE_ORDER[first.site];
  }

  /** Starts the next call if one is due, or arms the timer for when one will be. */
  private next(): void {
    if (this.running || this.pending.size === 0) return;
    const now = performance.now();
    const keys = [...this.pending.keys()].sort((a, b) => this.order(a) - this.order(b));
    const blocked = new Set([...this.pending.values()].flat().map((p) => p.stream));
    const active = [...this.lastSeen.entries()].filter(([, t]) => now - t <= this.activeMs).map(([s]) => s);
    const oldest = (k: string) => Math.min(...(this.pending.get(k) ?? []).map((p) => p.arrived));
    const due = active.every((s) => blocked.has(s)) ? keys[0] : keys.find((k) => now - oldest(k) >= this.windowMs);
    if (due !== undefined) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      const batch = this.pending.get(due) ?? [];
      this.pending.delete(due);
      this.running = true;
      void this.run(batch).finally(() => {
        this.running = false;
        this.next();
      });
      return;
    }
    // Wake when the oldest item's window ends, or when a busy worker falls quiet (then it no longer
    // counts as active and the blocked ones need not wait for it): with a long window the second
    // one is what ends a wait at the tail of a worker's run.
    const windowLeft = this.windowMs - (now - Math.min(...keys.map(oldest)));
    const lapses = [...this.lastSeen]
      .filter(([s, t]) => now - t <= this.activeMs && !blocked.has(s))
      .map(([, t]) => this.activeMs - (now - t) + 1);
    const wait = Math.max(0, Math.min(windowLeft, ...lapses));
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.next();
    }, wait);
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
