/**
 * Layer-wise loading's waiting room: while an adapter loads, how many of its layers are resident,
 * and the site calls waiting for a layer it has not reached yet. A call for layer L of a loading
 * adapter waits until layer L is resident, the load fails, or its wait limit passes. Shared by the
 * LoRA server's pool and a coupled or hybrid worker's local adapters.
 */
import { DeadlineExceededError, NotFoundError } from "@loramesh/errors";

interface Waiter {
  layer: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

interface Loading {
  /** Layers 0 .. ready−1 are resident. */
  ready: number;
  waiters: Waiter[];
}

export class LayerGate {
  private readonly loading = new Map<string, Loading>();

  /** An adapter starts loading: no layer is resident yet. */
  begin(id: string): void {
    this.loading.set(id, { ready: 0, waiters: [] });
  }

  isLoading(id: string): boolean {
    return this.loading.has(id);
  }

  /** Whether any adapter is mid-load (a step then cannot skip the per-layer waits). */
  anyLoading(): boolean {
    return this.loading.size > 0;
  }

  /** Layers resident so far (undefined when the adapter is not loading). */
  readyLayers(id: string): number | undefined {
    return this.loading.get(id)?.ready;
  }

  /** Layers 0 .. ready−1 are now resident: wakes the calls waiting for them. */
  advance(id: string, ready: number): void {
    const l = this.loading.get(id);
    if (!l) return;
    l.ready = ready;
    const [go, stay] = partition(l.waiters, (w) => w.layer < ready);
    l.waiters = stay;
    for (const w of go) w.resolve();
  }

  /** The load finished: every layer is resident. */
  end(id: string): void {
    const l = this.loading.get(id);
    if (!l) return;
    this.loading.delete(id);
    for (const w of l.waiters) w.resolve();
  }

  /** The load failed or the adapter was unloaded mid-load: waiting calls fail. */
  abort(id: string, reason: string): void {
    const l = this.loading.get(id);
    if (!l) return;
    this.loading.delete(id);
    for (const w of l.waiters) w.reject(new NotFoundError(`adapter ${id} is not resident: ${reason}`));
  }

  /** Resolves once `layer` of every adapter in `ids` is resident (at once for loaded adapters). */
  async wait(ids: readonly string[], layer: number, timeoutMs: number): Promise<void> {
    for (const id of new Set(ids)) {
      const l = this.loading.get(id);
      if (!l || layer < l.ready) continue;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          l.waiters = l.waiters.filter((w) => w !== waiter);
          reject(
            new DeadlineExceededError(
              `layer ${layer} of adapter ${id} was not resident within ${timeoutMs} ms (${l.ready} layers loaded)`,
            ),
          );
        }, timeoutMs);
        const waiter: Waiter = {
          layer,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
          reject: (err) => {
            clearTimeout(timer);
            reject(err);
          },
        };
        l.waiters.push(waiter);
      });
    }
  }
}

function partition<T>(items: readonly T[], test: (item: T) => boolean): [T[], T[]] {
  const yes: T[] = [];
  const no: T[] = [];
  for (const item of items) (test(item) ? yes : no).push(item);
  return [yes, no];
}
