/**
 * Rank-aware choice of a base worker for a request. A decode step costs what its largest-rank
 * adapter costs when ranks share a batch, so the router keeps rank classes apart when it can: among
 * the workers within `slack` requests of the least loaded, it prefers the one whose in-flight work
 * has the fewest requests of another rank class, then one holding the adapter locally, then the
 * least loaded. Load balance wins when no such alternative exists (slack bounds the detour).
 */
import { rankClass } from "@loramesh/policy";

/** Ranks of the requests the router has in flight on each worker (0 for the base model). */
export class InFlightRanks {
  private readonly byWorker = new Map<string, number[]>();

  add(workerId: string, rank: number): void {
    const list = this.byWorker.get(workerId) ?? [];
    list.push(rank);
    this.byWorker.set(workerId, list);
  }

  remove(workerId: string, rank: number): void {
    const list = this.byWorker.get(workerId) ?? [];
    const i = list.indexOf(rank);
    if (i >= 0) list.splice(i, 1);
  }

  of(workerId: string): readonly number[] {
    return this.byWorker.get(workerId) ?? [];
  }
}

export interface WorkerChoiceRequest {
  rank: number;
  /** Workers holding the adapter locally (coupled or hybrid). */
  localHolders: ReadonlySet<string>;
}

/** Requests in flight on `ranks` whose rank class differs from `rank`'s. */
export function rankMix(ranks: readonly number[], rank: number): number {
  const cls = rankClass(rank);
  return ranks.filter((r) => rankClass(r) !== cls).length;
}

export function chooseWorker<W extends { executorId: string }>(
  candidates: readonly W[],
  inFlight: InFlightRanks,
  request: WorkerChoiceRequest,
  slack = 1,
): W | undefined {
  if (candidates.length === 0) return undefined;
  const load = (w: W): number => inFlight.of(w.executorId).length;
  const least = Math.min(...candidates.map(load));
  const near = candidates.filter((w) => load(w) <= least + slack);
  return [...near].sort(
    (a, b) =>
      rankMix(inFlight.of(a.executorId), request.rank) - rankMix(inFlight.of(b.executorId), request.rank) ||
      Number(request.localHolders.has(b.executorId)) - Number(request.localHolders.has(a.executorId)) ||
      load(a) - load(b) ||
      a.executorId.localeCompare(b.executorId),
  )[0];
}
