/** Prometheus series of a LoRA server: residency, loads, evictions, rows per adapter, bytes moved. */
import { telemetry } from "@loramesh/telemetry";
import type { AdapterPool } from "./adapter-pool";

export function loraServerMetrics(
  pool: AdapterPool,
  /** Native calls and work items of the stream batcher and the ring thread together. */
  counters: () => { nativeCalls: number; workItems: number },
  openStreams: () => number,
  /** The ring thread's diagnosis counters (absent without a ring: not Linux). */
  ring?: () => { postsFound: Readonly<Record<string, number>>; preemptedSpins: number } | undefined,
): {
  work(rowAdapterIds: Array<string | undefined>, transport: string, bytesIn: number, bytesOut: number): void;
  /** The ring thread's rows per adapter so far (cumulative); what is new since the last call is counted. */
  ringRows(cumulative: Readonly<Record<string, number>>): void;
} {
  const m = telemetry().meter;
  m.createObservableGauge("loramesh_adapters_resident", { description: "adapters resident in the pool" }).addCallback(
    (r) => r.observe(pool.stats().residentIds.length),
  );
  m.createObservableGauge("loramesh_adapter_resident", { description: "1 for each resident adapter" }).addCallback(
    (r) => {
      for (const id of pool.stats().residentIds) r.observe(1, { adapter: id });
    },
  );
  m.createObservableGauge("loramesh_adapter_pool_bytes", {
    description: "bytes of resident adapters",
    unit: "By",
  }).addCallback((r) => r.observe(pool.bytesUsed));
  m.createObservableGauge("loramesh_adapter_pool_capacity_bytes", {
    description: "pool budget",
    unit: "By",
  }).addCallback((r) => r.observe(pool.capacityBytes));
  m.createObservableCounter("loramesh_adapter_loads_total", {
    description: "adapter loads, by source tier",
  }).addCallback((r) => {
    const s = pool.stats();
    r.observe(s.loadsFromStorage, { source: "storage" });
    r.observe(s.loadsFromHostCache, { source: "host_cache" });
  });
  m.createObservableCounter("loramesh_adapter_evictions_total", {
    description: "adapters evicted to the host cache",
  }).addCallback((r) => r.observe(pool.stats().evictions));
  m.createObservableCounter("loramesh_lora_native_calls_total", {
    description: "native batched-LoRA calls",
  }).addCallback((r) => r.observe(counters().nativeCalls));
  m.createObservableCounter("loramesh_lora_work_items_total", {
    description: "work items served (above native calls: cross-worker batching)",
  }).addCallback((r) => r.observe(counters().workItems));
  m.createObservableGauge("loramesh_lora_streams_open", { description: "worker streams open" }).addCallback((r) =>
    r.observe(openStreams()),
  );
  if (ring) {
    // Why a ring site's queue phase paid a wake-up or not (the expected post, docs/performance.md).
    m.createObservableCounter("loramesh_lora_ring_posts_found_total", {
      description:
        "ring posts by what the ring thread was doing when each arrived (expectSpin: spinning for it; busy: computing; the rest: asleep, a futex wake-up)",
    }).addCallback((r) => {
      const s = ring();
      if (s) for (const [state, n] of Object.entries(s.postsFound)) r.observe(n, { state });
    });
    m.createObservableCounter("loramesh_lora_ring_preempted_spins_total", {
      description: "ring-thread spins that found themselves descheduled (each locks the expected post out for 100 ms)",
    }).addCallback((r) => {
      const s = ring();
      if (s) r.observe(s.preemptedSpins);
    });
  }
  const rows = m.createCounter("loramesh_lora_rows_total", {
    description: "rows (tokens or token-expert pairs) computed, by adapter",
  });
  const bytes = m.createCounter("loramesh_lora_bytes_total", {
    description: "activation and delta bytes moved, by transport",
    unit: "By",
  });
  const ringSeen = new Map<string, number>();
  return {
    work(rowAdapterIds, transport, bytesIn, bytesOut) {
      const perAdapter = new Map<string, number>();
      for (const id of rowAdapterIds) if (id !== undefined) perAdapter.set(id, (perAdapter.get(id) ?? 0) + 1);
      for (const [adapter, n] of perAdapter) rows.add(n, { adapter });
      bytes.add(bytesIn, { transport, direction: "received" });
      bytes.add(bytesOut, { transport, direction: "sent" });
    },
    ringRows(cumulative) {
      for (const [adapter, n] of Object.entries(cumulative)) {
        const added = n - (ringSeen.get(adapter) ?? 0);
        if (added > 0) rows.add(added, { adapter, transport: "ring" });
        ringSeen.set(adapter, n);
      }
    },
  };
}
