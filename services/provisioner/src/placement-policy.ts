/**
 * Placement policies decide which executors should hold an adapter. They are pure functions of
 * the adapter and the live executors (with what each is already assigned), so the provisioner and
 * the simulator can share them.
 */
import { ExecutorKind, LoraMode, type ExecutorInfo } from "@loramesh/proto";

export interface PlacementAdapter {
  id: string;
  rank: number;
  sizeBytes: number;
}

export interface PlacementExecutor {
  info: ExecutorInfo;
  /** Bytes of adapters already assigned to it. */
  assignedBytes: number;
}

export interface PlacementPolicy {
  readonly name: string;
  /** The executors that should hold `adapter`, given its current targets. */
  place(adapter: PlacementAdapter, executors: readonly PlacementExecutor[], current: readonly string[]): string[];
}

function fits(e: PlacementExecutor, a: PlacementAdapter): boolean {
  const capacity = e.info.adapterCapacityBytes;
  const rankOk = e.info.maxRank === 0 || a.rank <= e.info.maxRank;
  return rankOk && (capacity === 0 || e.assignedBytes + a.sizeBytes <= capacity);
}

/**
 * The simple policy of the mesh issue:
 * - one LoRA server per adapter, the one with the fewest assigned bytes that fits;
 * - every coupled worker (it serves its adapters locally);
 * - hybrid workers while they have room (the rest is served remotely).
 * Executors that already hold or load the adapter stay assigned.
 */
export class SimplePlacementPolicy implements PlacementPolicy {
  readonly name = "simple";

  place(adapter: PlacementAdapter, executors: readonly PlacementExecutor[], current: readonly string[]): string[] {
    const live = new Set(executors.map((e) => e.info.executorId));
    const chosen = new Set(current.filter((id) => live.has(id)));
    const loraServers = executors.filter((e) => e.info.kind === ExecutorKind.EXECUTOR_KIND_LORA_SERVER);
    if (!loraServers.some((e) => chosen.has(e.info.executorId))) {
      const best = loraServers
        .filter((e) => fits(e, adapter))
        .sort((a, b) => a.assignedBytes - b.assignedBytes || a.info.executorId.localeCompare(b.info.executorId))[0];
      if (best) chosen.add(best.info.executorId);
    }
    for (const e of executors) {
      if (e.info.kind !== ExecutorKind.EXECUTOR_KIND_BASE_WORKER || chosen.has(e.info.executorId)) continue;
      const local = e.info.loraMode === LoraMode.LORA_MODE_COUPLED || e.info.loraMode === LoraMode.LORA_MODE_HYBRID;
      if (local && fits(e, adapter)) chosen.add(e.info.executorId);
    }
    return [...chosen].sort();
  }
}
