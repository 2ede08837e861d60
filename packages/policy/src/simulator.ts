/**
 * A discrete-event simulator of a LoRA-serving cluster: executors run iteration-level batches whose
 * duration comes from the calibrated cost model; a placement policy decides where adapters live;
 * requests go to the least-busy executor that holds their adapter (rank-aware routing prefers one
 * whose running batch has the same rank class); a request whose adapter is resident nowhere pays a
 * load from storage. Deterministic for a seed.
 */
import { CostModel, type RankMode } from "./cost-model";
import { rankClass, type PlacementPolicy, type PolicyAdapter, type PolicyExecutor } from "./placement";
import { makeAdapters, makeRequests, type AdapterSpec, type Request, type WorkloadSpec } from "./workload";

export interface ClusterSpec {
  executors: number;
  /** Adapter budget per executor (bytes). */
  capacityBytes: number;
  /** Most sequences in one batch. */
  maxBatch: number;
  /** coupled: LoRA on the executors; disaggregated: on LoRA servers (remote round trips). */
  mode: "coupled" | "disaggregated";
  /** LoRA servers in disaggregated mode, each with `capacityBytes`. */
  loraServers: number;
  kernel: RankMode;
  rankAwareRouting: boolean;
  /** Seconds between re-placements with observed traffic (0: place once). */
  replaceEvery: number;
}

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
  /** Percentiles before and after the drift point (when the workload has one). */
  phases?: { before: { ttftP95: number; attainment: number }; after: { ttftP95: number; attainment: number } };
}

interface Running {
  req: Request;
  rank: number;
  prefilled: boolean;
  generated: number;
  firstToken?: number;
  lastToken?: number;
}

interface Exec {
  id: string;
  queue: Running[];
  running: Running[];
  busyUntil: number;
  resident: Set<string>;
}

/** The p-th percentile of an ascending list (nearest rank; 0 when empty). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

export function simulate(
  workload: WorkloadSpec,
  cluster: ClusterSpec,
  policy: PlacementPolicy,
  cost: CostModel,
  slo: Slo,
): SimulationResult {
  const adapters = makeAdapters(workload);
  const byId = new Map(adapters.map((a) => [a.id, a]));
  const requests = makeRequests(workload, adapters);
  const execs: Exec[] = Array.from({ length: cluster.executors }, (_, i) => ({
    id: `e${i}`,
    queue: [],
    running: [],
    busyUntil: 0,
    resident: new Set<string>(),
  }));
  // Where adapters live: on executors (coupled) or on LoRA servers (disaggregated; one pool
  // reachable from every executor).
  const holders = cluster.mode === "coupled" ? cluster.executors : cluster.loraServers;
  const policyExecutors: PolicyExecutor[] = Array.from({ length: holders }, (_, i) => ({
    id: `h${i}`,
    capacityBytes: cluster.capacityBytes,
  }));
  const totalWeight = adapters.reduce((s, a) => s + a.weight, 0);
  let placement = policy.place(
    adapters.map((a) => ({ id: a.id, rank: a.rank, sizeBytes: a.sizeBytes, share: a.weight / totalWeight })),
    policyExecutors,
    new Map(),
  );
  const seen = new Map<string, number>();
  let nextReplace = cluster.replaceEvery > 0 ? cluster.replaceEvery : Infinity;
  const holdersOf = (adapter: string): number[] => (placement.get(adapter) ?? []).map((h) => Number(h.slice(1)));
  const placedAnywhere = (adapter: string): boolean => holdersOf(adapter).length > 0;

  const finished: Running[] = [];
  let coldLoads = 0;
  let tokens = 0;
  let ri = 0;
  const totalRequests = requests.length;

  // Event loop over executor iterations and arrivals, in time order.
  for (;;) {
    const nextArrival = ri < totalRequests ? (requests[ri] as Request).arrival : Infinity;
    const busy = execs.filter((e) => e.running.length > 0 || e.queue.length > 0);
    const nextIteration = busy.length > 0 ? Math.min(...busy.map((e) => e.busyUntil)) : Infinity;
    if (nextArrival === Infinity && nextIteration === Infinity) break;
    if (nextArrival <= nextIteration) {
      const req = requests[ri++] as Request;
      const now = req.arrival;
      seen.set(req.adapter, (seen.get(req.adapter) ?? 0) + 1);
      if (now >= nextReplace) {
        const total = [...seen.values()].reduce((a, b) => a + b, 0);
        const observed: PolicyAdapter[] = adapters.map((a) => ({
          id: a.id,
          rank: a.rank,
          sizeBytes: a.sizeBytes,
          share: (seen.get(a.id) ?? 0) / total,
        }));
        placement = policy.place(observed, policyExecutors, placement);
        seen.clear();
        nextReplace = now + cluster.replaceEvery;
      }
      const adapter = byId.get(req.adapter) as AdapterSpec;
      // Candidate executors: coupled → those holding the adapter (any if none does: a cold load);
      // disaggregated → all (LoRA lives on the servers).
      let candidates = cluster.mode === "coupled" ? holdersOf(req.adapter).map((h) => execs[h] as Exec) : execs;
      if (candidates.length === 0) candidates = execs;
      const cls = rankClass(adapter.rank);
      const score = (e: Exec): number => {
        const load = e.running.length + e.queue.length;
        if (!cluster.rankAwareRouting) return load;
        const mismatch = [...e.running, ...e.queue].filter((r) => rankClass(r.rank) !== cls).length;
        return load + 0.5 * mismatch;
      };
      const target = [...candidates].sort((x, y) => score(x) - score(y) || x.id.localeCompare(y.id))[0] as Exec;
      const run: Running = { req, rank: adapter.rank, prefilled: false, generated: 0 };
      const resident =
        cluster.mode === "coupled"
          ? target.resident.has(req.adapter) || holdersOf(req.adapter).includes(Number(target.id.slice(1)))
          : placedAnywhere(req.adapter) || target.resident.has(req.adapter);
      if (!resident) {
        // Not resident where it runs: load it first (storage), then keep it.
        coldLoads++;
        target.resident.add(req.adapter);
        target.busyUntil = Math.max(target.busyUntil, now) + cost.loadSeconds(adapter.sizeBytes);
      }
      target.queue.push(run);
      if (target.running.length === 0 && target.busyUntil < now) target.busyUntil = now;
      continue;
    }
    // One iteration on the executor that is free first.
    const e = busy.sort((a, b) => a.busyUntil - b.busyUntil || a.id.localeCompare(b.id))[0] as Exec;
    const now = e.busyUntil;
    while (e.running.length < cluster.maxBatch && e.queue.length > 0 && (e.queue[0] as Running).req.arrival <= now)
      e.running.push(e.queue.shift() as Running);
    if (e.running.length === 0) {
      e.busyUntil = e.queue.length > 0 ? (e.queue[0] as Running).req.arrival : Infinity;
      if (e.busyUntil === Infinity) e.queue.length = 0;
      continue;
    }
    const perAdapter = new Map<string, { tokens: number; rank: number }>();
    let stepTokens = 0;
    for (const r of e.running) {
      const t = r.prefilled ? 1 : r.req.promptTokens;
      stepTokens += t;
      const entry = perAdapter.get(r.req.adapter) ?? { tokens: 0, rank: r.rank };
      entry.tokens += t;
      perAdapter.set(r.req.adapter, entry);
    }
    const us = cost.stepUs(
      { tokens: stepTokens, adapters: [...perAdapter.values()] },
      { mode: cluster.kernel, ...(cluster.mode === "disaggregated" ? { remote: "shm" as const } : {}) },
    );
    const end = now + us / 1e6;
    for (const r of e.running) {
      if (!r.prefilled) {
        r.prefilled = true;
        r.firstToken = end;
      }
      r.generated++;
      tokens++;
      r.lastToken = end;
    }
    const still: Running[] = [];
    for (const r of e.running) (r.generated >= r.req.outputTokens ? finished : still).push(r);
    e.running = still;
    e.busyUntil = end;
  }

  const duration = Math.max(workload.duration, ...finished.map((r) => r.lastToken ?? 0));
  const ttft = finished.map((r) => ((r.firstToken ?? 0) - r.req.arrival) * 1000);
  const tpot = finished.map((r) =>
    r.req.outputTokens > 1 ? (((r.lastToken ?? 0) - (r.firstToken ?? 0)) * 1000) / (r.req.outputTokens - 1) : 0,
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
    policy: policy.name,
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
    const phase = (pred: (r: Running) => boolean) => {
      const idx = finished
        .map((r, i) => [r, i] as const)
        .filter(([r]) => pred(r))
        .map(([, i]) => i);
      const t = idx.map((i) => ttft[i] as number).sort((a, b) => a - b);
      return { ttftP95: percentile(t, 95), attainment: idx.filter((i) => ok[i]).length / Math.max(1, idx.length) };
    };
    result.phases = { before: phase((r) => r.req.arrival <= cut), after: phase((r) => r.req.arrival > cut) };
  }
  return result;
}

/**
 * The highest request rate at which the SLO still holds (P95 TTFT and mean TPOT within target, as
 * InfiniLoRA defines it), by bisection between `lo` and `hi` requests per second.
 */
export function serviceableRate(
  workload: WorkloadSpec,
  cluster: ClusterSpec,
  policy: () => PlacementPolicy,
  cost: CostModel,
  slo: Slo,
  lo = 0.5,
  hi = 200,
  steps = 8,
): number {
  const meets = (rate: number): boolean => {
    const r = simulate({ ...workload, rate }, cluster, policy(), cost, slo);
    return r.ttftMs.p95 <= slo.ttftMs && r.tpotMs.mean <= slo.tpotMs;
  };
  if (!meets(lo)) return 0;
  let good = lo,
    bad = hi;
  if (meets(hi)) return hi;
  for (let i = 0; i < steps; i++) {
    const mid = (good + bad) / 2;
    if (meets(mid)) good = mid;
    else bad = mid;
  }
  return good;
}
