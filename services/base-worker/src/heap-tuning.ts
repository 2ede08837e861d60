/**
 * The worker's V8 heap, tuned for latency. With V8's own heuristics the old generation's limit is
 * set by the start-up collections, while the model loads and allocation runs fast, at up to four
 * times the live heap (about 23 MiB live → a limit near 90 MiB). Objects in flight at each young
 * collection are promoted, so under load the old generation fills to that limit in about 30 s and the
 * first full collection, of ~90 MiB, stops the event loop for 50–90 ms (more on a busy machine):
 * every request arriving then waits (m15v traced the "rebalance stall" of the hybrid case to it).
 * A smaller growing factor keeps full collections small and frequent (~10 ms each, every few
 * seconds), and one full collection once start-up is done drops the loader's garbage and sets the
 * limit from the serving heap.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

export interface HeapTuning {
  /** The growing factor in force: 1 + percent / 100 (0: V8's own heuristics). */
  growingPercent: number;
  /** One full collection now (start-up is done); false when it could not be run. */
  collect: () => boolean;
}

/**
 * Sets V8's old-generation growing factor to 1 + percent / 100 (0 leaves V8's heuristics). V8
 * reads the flag whenever it recomputes its limits after a full collection, so it holds from the
 * next one, which `collect` starts.
 */
export function tuneHeap(growingPercent: number): HeapTuning {
  if (growingPercent > 0) setFlagsFromString(`--heap-growing-percent=${Math.round(growingPercent)}`);
  return {
    growingPercent,
    collect: () => {
      if (growingPercent <= 0) return false;
      // `gc` exists only with --expose-gc; a fresh context picks the flag up after it is set.
      setFlagsFromString("--expose-gc");
      const gc = runInNewContext("gc") as unknown;
      if (typeof gc !== "function") return false;
      (gc as () => void)();
      return true;
    },
  };
}
