/**
 * One placement decision for the whole mesh. LoRA servers are placed by a policy from
 * @loramesh/policy (the same code the simulator runs); coupled and hybrid workers keep local copies
 * of what fits them. Between rebalances the decision is additive: placed adapters stay where they
 * are, new adapters and extra replicas of hot ones are added. A rebalance applies the policy fully,
 * and every removal becomes a move (load on the target first, then drain the source).
 */
import { ExecutorKind, LoraMode, type ExecutorInfo } from "@loramesh/proto";
import type { PlacementPolicy, PolicyAdapter, PolicyExecutor } from "@loramesh/policy";

export interface Move {
  adapterId: string;
  from: string;
  to: string;
}

export interface PlacementInputs {
  adapters: readonly PolicyAdapter[];
  /** Live executors. */
  executors: readonly ExecutorInfo[];
  /** Current target sets (may name executors that are gone). */
  targets: ReadonlyMap<string, readonly string[]>;
  /** Adapters with a move under way: left exactly as they are. */
  moving: ReadonlySet<string>;
}

export interface PlacementDecision {
  /** The wanted target set of every adapter (executors being moved away from are still in it). */
  targets: Map<string, string[]>;
  /** Moves to start: `to` is already in the wanted targets, `from` leaves after `to` is resident. */
  moves: Move[];
}

export interface DecideOptions {
  /** Apply the policy fully (moves allowed) instead of additively. */
  rebalance: boolean;
  /** At most this many moves per rebalance (bounded churn). */
  maxMoves?: number;
}

const isLoraServer = (e: ExecutorInfo): boolean => e.kind === ExecutorKind.EXECUTOR_KIND_LORA_SERVER;
const holdsLocally = (e: ExecutorInfo): boolean =>
  e.kind === ExecutorKind.EXECUTOR_KIND_BASE_WORKER &&
  (e.loraMode === LoraMode.LORA_MODE_COUPLED || e.loraMode === LoraMode.LORA_MODE_HYBRID);

export function policyExecutor(e: ExecutorInfo): PolicyExecutor {
  return { id: e.executorId, capacityBytes: e.adapterCapacityBytes, maxRank: e.maxRank };
}

/** What room and rank checks need of an adapter. */
type Sized = Pick<PolicyAdapter, "rank" | "sizeBytes">;

/** Byte and rank bookkeeping while targets are chosen. */
export class Room {
  private readonly used = new Map<string, number>();
  constructor(private readonly executors: ReadonlyMap<string, PolicyExecutor>) {}

  fits(executorId: string, a: Sized): boolean {
    const e = this.executors.get(executorId);
    if (!e) return false;
    if (e.maxRank && a.rank > e.maxRank) return false;
    return e.capacityBytes === 0 || (this.used.get(executorId) ?? 0) + a.sizeBytes <= e.capacityBytes;
  }

  take(executorId: string, a: Sized): void {
    this.used.set(executorId, (this.used.get(executorId) ?? 0) + a.sizeBytes);
  }

  usedBy(executorId: string): number {
    return this.used.get(executorId) ?? 0;
  }
}

export function decidePlacement(
  inputs: PlacementInputs,
  policy: PlacementPolicy,
  options: DecideOptions,
): PlacementDecision {
  const servers = inputs.executors.filter(isLoraServer).map(policyExecutor);
  const serverIds = new Set(servers.map((s) => s.id));
  const room = new Room(new Map(servers.map((s) => [s.id, s])));
  const currentOnServers = new Map<string, string[]>();
  for (const a of inputs.adapters)
    currentOnServers.set(
      a.id,
      (inputs.targets.get(a.id) ?? []).filter((id) => serverIds.has(id)),
    );
  const proposal: ReadonlyMap<string, string[]> =
    servers.length > 0 ? policy.place(inputs.adapters, servers, currentOnServers) : new Map();
  const targets = new Map<string, string[]>();
  const moves: Move[] = [];
  const maxMoves = options.maxMoves ?? 8;

  // Adapters in motion and (outside a rebalance) every placed adapter keep their servers first, so
  // the additions below only use room that is really free.
  const order = [...inputs.adapters].sort((x, y) => y.share * y.rank - x.share * x.rank || x.id.localeCompare(y.id));
  for (const a of order) {
    const kept = currentOnServers.get(a.id) ?? [];
    for (const id of kept) room.take(id, a);
    targets.set(a.id, [...kept]);
  }
  for (const a of order) {
    const chosen = targets.get(a.id) as string[];
    const proposed = (proposal.get(a.id) ?? []).filter((id) => serverIds.has(id));
    if (inputs.moving.has(a.id)) continue;
    if (options.rebalance && chosen.length > 0 && proposed.length > 0 && moves.length < maxMoves)
      rebalanceAdapter(a, chosen, proposed, room, moves, maxMoves);
    else addToServers(a, chosen, proposed, room, servers);
  }
  placeOnWorkers(inputs, order, targets);
  for (const [id, list] of targets) targets.set(id, [...new Set(list)].sort());
  return { targets, moves };
}

/**
 * Pairs each server the policy drops with one it adds (or, for a shrinking replica set, one that
 * already holds it): the source is drained only after the target is resident.
 */
function rebalanceAdapter(
  a: PolicyAdapter,
  chosen: string[],
  proposed: readonly string[],
  room: Room,
  moves: Move[],
  maxMoves: number,
): void {
  const added = proposed.filter((id) => !chosen.includes(id) && room.fits(id, a));
  const dropped = chosen.filter((id) => !proposed.includes(id));
  for (const from of dropped) {
    if (moves.length >= maxMoves) break;
    const to = added.shift() ?? proposed.find((id) => chosen.includes(id) && id !== from);
    if (to === undefined) continue;
    if (!chosen.includes(to)) {
      room.take(to, a);
      chosen.push(to);
    }
    moves.push({ adapterId: a.id, from, to });
  }
  for (const to of added) {
    room.take(to, a);
    chosen.push(to);
  }
}

/** Additive: the policy's choice for an unplaced adapter, extra replicas for a hot one. */
function addToServers(
  a: PolicyAdapter,
  chosen: string[],
  proposed: readonly string[],
  room: Room,
  servers: readonly PolicyExecutor[],
): void {
  for (const id of proposed) {
    if (chosen.includes(id) || !room.fits(id, a)) continue;
    if (chosen.length >= Math.max(1, proposed.length)) break;
    room.take(id, a);
    chosen.push(id);
  }
  if (chosen.length > 0) return;
  // The policy found no room given the kept placements; the least used server that fits.
  const best = leastUsedFitting(a, room, servers);
  if (best) {
    room.take(best, a);
    chosen.push(best);
  }
}

/** The id of the server with the fewest assigned bytes that has room and rank for the adapter. */
export function leastUsedFitting(a: Sized, room: Room, servers: readonly PolicyExecutor[]): string | undefined {
  return servers
    .filter((s) => room.fits(s.id, a))
    .sort((x, y) => room.usedBy(x.id) - room.usedBy(y.id) || x.id.localeCompare(y.id))[0]?.id;
}

/** Coupled and hybrid workers: keep what they hold, then add by traffic while it fits. */
function placeOnWorkers(
  inputs: PlacementInputs,
  order: readonly PolicyAdapter[],
  targets: Map<string, string[]>,
): void {
  const workers = inputs.executors.filter(holdsLocally);
  const workerRoom = new Room(new Map(workers.map((w) => [w.executorId, policyExecutor(w)])));
  for (const w of workers) {
    for (const a of order) {
      const current = inputs.targets.get(a.id) ?? [];
      const chosen = targets.get(a.id) as string[];
      if (current.includes(w.executorId) && workerRoom.fits(w.executorId, a)) {
        workerRoom.take(w.executorId, a);
        chosen.push(w.executorId);
      }
    }
    for (const a of order) {
      const chosen = targets.get(a.id) as string[];
      if (!chosen.includes(w.executorId) && workerRoom.fits(w.executorId, a)) {
        workerRoom.take(w.executorId, a);
        chosen.push(w.executorId);
      }
    }
  }
}
