/**
 * Placement policies behind one interface, used by the provisioner and by the simulator. A policy
 * maps every adapter to the executors that should hold it, never beyond an executor's byte budget.
 */
import { SeededRandom } from "./random";

export interface PolicyAdapter {
  id: string;
  rank: number;
  sizeBytes: number;
  /** Fraction of requests that use this adapter (traffic statistics; 0 when unknown). */
  share: number;
}

export interface PolicyExecutor {
  id: string;
  /** Adapter byte budget; 0 means unlimited. */
  capacityBytes: number;
  /** Highest LoRA rank it serves; 0 or absent means any. */
  maxRank?: number;
}

export type Assignment = Map<string, string[]>;

export interface PlacementPolicy {
  readonly name: string;
  /** Where each adapter should live, given where they live now. */
  place(
    adapters: readonly PolicyAdapter[],
    executors: readonly PolicyExecutor[],
    current: ReadonlyMap<string, readonly string[]>,
  ): Assignment;
}

/** Rank classes that LoRAServe-style grouping keeps apart. */
export function rankClass(rank: number): number {
  return rank <= 8 ? 0 : rank <= 16 ? 1 : rank <= 32 ? 2 : rank <= 64 ? 3 : 4;
}

class Ledger {
  readonly used = new Map<string, number>();
  readonly load = new Map<string, number>();
  readonly classes = new Map<string, number[]>();

  constructor(readonly executors: readonly PolicyExecutor[]) {
    for (const e of executors) {
      this.used.set(e.id, 0);
      this.load.set(e.id, 0);
      this.classes.set(e.id, [0, 0, 0, 0, 0]);
    }
  }

  fits(e: PolicyExecutor, a: PolicyAdapter): boolean {
    if (e.maxRank !== undefined && e.maxRank > 0 && a.rank > e.maxRank) return false;
    return e.capacityBytes === 0 || (this.used.get(e.id) ?? 0) + a.sizeBytes <= e.capacityBytes;
  }

  add(e: string, a: PolicyAdapter, load: number): void {
    this.used.set(e, (this.used.get(e) ?? 0) + a.sizeBytes);
    this.load.set(e, (this.load.get(e) ?? 0) + load);
    const c = this.classes.get(e) as number[];
    c[rankClass(a.rank)] = (c[rankClass(a.rank)] as number) + load;
  }
}

/** Uniformly random among the executors that fit; an adapter stays where it is. */
export class RandomPolicy implements PlacementPolicy {
  readonly name = "random";
  constructor(private readonly seed = 1) {}

  place(
    adapters: readonly PolicyAdapter[],
    executors: readonly PolicyExecutor[],
    current: ReadonlyMap<string, readonly string[]>,
  ): Assignment {
    const rng = new SeededRandom(this.seed);
    const ledger = new Ledger(executors);
    const out: Assignment = new Map();
    const live = new Set(executors.map((e) => e.id));
    for (const a of adapters) {
      const kept = (current.get(a.id) ?? []).filter((id) => live.has(id));
      const keep = kept.find((id) => ledger.fits(executors.find((e) => e.id === id) as PolicyExecutor, a));
      const options = executors.filter((e) => ledger.fits(e, a));
      const chosen =
        keep ?? (options.length > 0 ? (options[rng.int(0, options.length)] as PolicyExecutor).id : undefined);
      if (chosen === undefined) continue;
      ledger.add(chosen, a, a.share * a.rank);
      out.set(a.id, [chosen]);
    }
    return out;
  }
}

/** Adapters in id order, dealt to executors in turn (skipping full ones). */
export class RoundRobinPolicy implements PlacementPolicy {
  readonly name = "round-robin";

  place(adapters: readonly PolicyAdapter[], executors: readonly PolicyExecutor[]): Assignment {
    const ledger = new Ledger(executors);
    const out: Assignment = new Map();
    let next = 0;
    for (const a of [...adapters].sort((x, y) => x.id.localeCompare(y.id))) {
      for (let tries = 0; tries < executors.length; tries++) {
        const e = executors[(next + tries) % executors.length] as PolicyExecutor;
        if (ledger.fits(e, a)) {
          ledger.add(e.id, a, a.share * a.rank);
          out.set(a.id, [e.id]);
          next = (next + tries + 1) % executors.length;
          break;
        }
      }
    }
    return out;
  }
}

export interface RankAwareOptions {
  /** An adapter gets one replica per this much traffic share (hot adapters are replicated). */
  replicaShare?: number;
  maxReplicas?: number;
  /** Weight of putting an adapter with a different rank class on an executor (grouping by class). */
  classMixPenalty?: number;
}

/**
 * LoRAServe-style: balance rank-weighted load (traffic share × rank) across executors, keep rank
 * classes together, and replicate hot adapters. New adapters are added greedily; placed adapters
 * stay (no churn). `RebalancingPolicy` adds moves when load drifts.
 */
export class RankAwarePolicy implements PlacementPolicy {
  readonly name: string = "rank-aware";
  protected readonly replicaShare: number;
  protected readonly maxReplicas: number;
  protected readonly classMixPenalty: number;

  constructor(options: RankAwareOptions = {}) {
    this.replicaShare = options.replicaShare ?? 0.1;
    this.maxReplicas = options.maxReplicas ?? 4;
    this.classMixPenalty = options.classMixPenalty ?? 0.5;
  }

  replicas(a: PolicyAdapter, executors: number): number {
    return Math.max(1, Math.min(this.maxReplicas, executors, Math.ceil(a.share / this.replicaShare)));
  }

  place(
    adapters: readonly PolicyAdapter[],
    executors: readonly PolicyExecutor[],
    current: ReadonlyMap<string, readonly string[]>,
  ): Assignment {
    return this.greedy(adapters, executors, current);
  }

  /** Greedy by descending rank-weighted load; `current` assignments are kept when they still fit. */
  protected greedy(
    adapters: readonly PolicyAdapter[],
    executors: readonly PolicyExecutor[],
    current: ReadonlyMap<string, readonly string[]>,
  ): Assignment {
    const ledger = new Ledger(executors);
    const out: Assignment = new Map();
    const live = new Set(executors.map((e) => e.id));
    const byId = new Map(executors.map((e) => [e.id, e]));
    const order = [...adapters].sort(
      (x, y) => y.share * y.rank - x.share * x.rank || y.rank - x.rank || x.id.localeCompare(y.id),
    );
    // First keep what is already placed, so adding an adapter never moves the others.
    const pending: PolicyAdapter[] = [];
    for (const a of order) {
      const want = this.replicas(a, executors.length);
      const kept = (current.get(a.id) ?? [])
        .filter((id) => live.has(id) && ledger.fits(byId.get(id) as PolicyExecutor, a))
        .slice(0, want);
      for (const id of kept) ledger.add(id, a, (a.share * a.rank) / want);
      if (kept.length > 0) out.set(a.id, kept);
      if (kept.length < want) pending.push(a);
    }
    // Every adapter gets its first copy before any hot adapter gets an extra replica, so
    // replication only uses room no unplaced adapter needs.
    for (const phase of ["first", "replicas"] as const) {
      for (const a of pending) {
        const want = phase === "first" ? 1 : this.replicas(a, executors.length);
        const chosen = [...(out.get(a.id) ?? [])];
        const perReplica = (a.share * a.rank) / this.replicas(a, executors.length);
        while (chosen.length < want) {
          const cls = rankClass(a.rank);
          const candidates = executors.filter((e) => !chosen.includes(e.id) && ledger.fits(e, a));
          if (candidates.length === 0) break;
          const cost = (e: PolicyExecutor): number => {
            const classes = ledger.classes.get(e.id) as number[];
            const total = classes.reduce((s, x) => s + x, 0);
            const other = total - (classes[cls] as number);
            return (ledger.load.get(e.id) ?? 0) + perReplica + this.classMixPenalty * other * (a.rank / 64);
          };
          const best = candidates.sort(
            (x, y) =>
              cost(x) - cost(y) ||
              (ledger.used.get(x.id) ?? 0) - (ledger.used.get(y.id) ?? 0) ||
              x.id.localeCompare(y.id),
          )[0] as PolicyExecutor;
          ledger.add(best.id, a, perReplica);
          chosen.push(best.id);
        }
        if (chosen.length > 0) out.set(a.id, chosen);
      }
    }
    return out;
  }
}

/** Max over mean of rank-weighted load per executor (1 = perfectly balanced). */
export function imbalance(
  adapters: readonly PolicyAdapter[],
  executors: readonly PolicyExecutor[],
  assignment: ReadonlyMap<string, readonly string[]>,
): number {
  const load = new Map(executors.map((e) => [e.id, 0]));
  for (const a of adapters) {
    const holders = assignment.get(a.id) ?? [];
    for (const h of holders) load.set(h, (load.get(h) ?? 0) + (a.share * a.rank) / holders.length);
  }
  const values = [...load.values()];
  const mean = values.reduce((s, x) => s + x, 0) / Math.max(1, values.length);
  return mean === 0 ? 1 : Math.max(...values) / mean;
}

/** Rank-aware, and when traffic drifts so that imbalance exceeds `threshold`, placed from scratch. */
export class RebalancingPolicy extends RankAwarePolicy {
  override readonly name = "rank-aware+rebalancing";

  constructor(
    options: RankAwareOptions & { threshold?: number } = {},
    private readonly threshold = options.threshold ?? 1.3,
  ) {
    super(options);
  }

  override place(
    adapters: readonly PolicyAdapter[],
    executors: readonly PolicyExecutor[],
    current: ReadonlyMap<string, readonly string[]>,
  ): Assignment {
    const incremental = this.greedy(adapters, executors, current);
    if (imbalance(adapters, executors, incremental) <= this.threshold) return incremental;
    const fresh = this.greedy(adapters, executors, new Map());
    return imbalance(adapters, executors, fresh) < imbalance(adapters, executors, incremental) ? fresh : incremental;
  }
}

/** The policy named `name`; `options` tune the rank-aware ones (replication). */
export function policyByName(name: string, seed = 1, options: RankAwareOptions = {}): PlacementPolicy {
  switch (name) {
    case "random":
      return new RandomPolicy(seed);
    case "round-robin":
      return new RoundRobinPolicy();
    case "rank-aware":
      return new RankAwarePolicy(options);
    case "rank-aware+rebalancing":
    case "rebalancing":
      return new RebalancingPolicy(options);
    default:
      throw new Error(
        `unknown placement policy ${JSON.stringify(name)}; use random, round-robin, rank-aware or rank-aware+rebalancing`,
      );
  }
}

export const POLICY_NAMES = ["random", "round-robin", "rank-aware", "rank-aware+rebalancing"] as const;
