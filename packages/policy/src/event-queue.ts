/** A binary min-heap of timed events; ties break by insertion order, so runs are deterministic. */
export interface TimedEvent<T> {
  time: number;
  seq: number;
  value: T;
}

export class EventQueue<T> {
  private readonly heap: Array<TimedEvent<T>> = [];
  private counter = 0;

  get size(): number {
    return this.heap.length;
  }

  peekTime(): number {
    return this.heap.length > 0 ? (this.heap[0] as TimedEvent<T>).time : Infinity;
  }

  push(time: number, value: T): void {
    const h = this.heap;
    h.push({ time, seq: this.counter++, value });
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i] as TimedEvent<T>, h[p] as TimedEvent<T>)) break;
      [h[i], h[p]] = [h[p] as TimedEvent<T>, h[i] as TimedEvent<T>];
      i = p;
    }
  }

  pop(): TimedEvent<T> | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.less(h[l] as TimedEvent<T>, h[m] as TimedEvent<T>)) m = l;
        if (r < h.length && this.less(h[r] as TimedEvent<T>, h[m] as TimedEvent<T>)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m] as TimedEvent<T>, h[i] as TimedEvent<T>];
        i = m;
      }
    }
    return top;
  }

  private less(a: TimedEvent<T>, b: TimedEvent<T>): boolean {
    return a.time < b.time || (a.time === b.time && a.seq < b.seq);
  }
}
