/** Latency statistics of a simulated run, in the same terms as the load generator reports them. */
import type { Request, WorkloadSpec } from "./workload";

export interface Slo {
  ttftMs: number;
  tpotMs: number;
}

export interface SimulationResult {
  policy: string;
  completed: number;
  throughputTokensPerSecond: number;
  ttftMs: { p50: number; p95: number; p99: number };
  tpotMs: { p50: number; p95: number; p99: number; mean: number };
  sloAttainment: number;
  adaptersMeetingSlo: number;
  coldLoads: number;
  /** Requests whose adapter can never fit where it must run. */
  rejected?: number;
  /** Each finished request's TTFT in ms, in the order finished (only with `ClusterSpec.keepTtfts`). */
  ttftsMs?: number[];
  /** Their requests' arrivals (s), in the same order (with `ttftsMs`). */
  arrivalsS?: number[];
  /** Busy share of the LoRA servers' lanes over the run (disaggregated and hybrid). */
  loraServerUtilization?: number;
  /** Percentiles before and after the drift point (when the workload has one). */
  phases?: { before: { ttftP95: number; attainment: number }; after: { ttftP95: number; attainment: number } };
}

export interface FinishedRequest {
  req: Request;
  first: number;
  last: number;
}

/** The p-th percentile of an ascending list (nearest rank; 0 when empty). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

export function summarize(
  finished: readonly FinishedRequest[],
  workload: WorkloadSpec,
  policy: string,
  tokens: number,
  coldLoads: number,
  slo: Slo,
): SimulationResult {
  const duration = Math.max(workload.duration, ...finished.map((r) => r.last));
  const ttft = finished.map((r) => (r.first - r.req.arrival) * 1000);
  const tpot = finished.map((r) =>
    r.req.outputTokens > 1 ? ((r.last - r.first) * 1000) / (r.req.outputTokens - 1) : 0,
  );
  const ok = finished.map((_, i) => (ttft[i] as number) <= slo.ttftMs && (tpot[i] as number) <= slo.tpotMs);
  const perAdapter = new Map<string, { n: number; ok: number }>();
  finished.forEach((r, i) => {
    const s = perAdapter.get(r.req.adapter) ?? { n: 0, ok: 0 };
    s.n++;
    if (ok[i]) s.ok++;
    perAdapter.set(r.req.adapter, s);
  });
  const sortedTtft = [...ttft].sort((a, b) => a - b);
  const sortedTpot = [...tpot].sort((a, b) => a - b);
  const result: SimulationResult = {
    policy,
    completed: finished.length,
    throughputTokensPerSecond: tokens / duration,
    ttftMs: { p50: percentile(sortedTtft, 50), p95: percentile(sortedTtft, 95), p99: percentile(sortedTtft, 99) },
    tpotMs: {
      p50: percentile(sortedTpot, 50),
      p95: percentile(sortedTpot, 95),
      p99: percentile(sortedTpot, 99),
      mean: tpot.reduce((a, b) => a + b, 0) / Math.max(1, tpot.length),
    },
    sloAttainment: ok.filter(Boolean).length / Math.max(1, ok.length),
    adaptersMeetingSlo: [...perAdapter.values()].filter((s) => s.ok / s.n > 0.9).length / Math.max(1, perAdapter.size),
    coldLoads,
  };
  if (workload.driftAt !== undefined) {
    const cut = workload.duration * workload.driftAt;
    const phase = (before: boolean) => {
      const idx = finished.map((r, i) => (r.req.arrival <= cut === before ? i : -1)).filter((i) => i >= 0);
      const t = idx.map((i) => ttft[i] as number).sort((a, b) => a - b);
      return { ttftP95: percentile(t, 95), attainment: idx.filter((i) => ok[i]).length / Math.max(1, idx.length) };
    };
    result.phases = { before: phase(true), after: phase(false) };
  }
  return result;
}
