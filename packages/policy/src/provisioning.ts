/**
 * SLO-driven provisioning. The TTFT target becomes a required coverage: the probability that a
 * request's adapter is already resident when it arrives. The smallest resident set reaching that
 * coverage under a byte budget is a 0/1 knapsack (value = request share, weight = bytes), solved by
 * dynamic programming; the smallest LoRA-server count is the first whose total budget reaches the
 * coverage and whose predicted per-step LoRA time (cost model) meets the TPOT target.
 */
import { CostModel } from "./cost-model";
import type { PolicyAdapter } from "./placement";

export interface KnapsackResult {
  /** Adapter ids chosen. */
  chosen: string[];
  /** Sum of their shares. */
  coverage: number;
  bytes: number;
}

/**
 * Maximum-share subset within `capacityBytes`. Weights are rounded up to `unitBytes`, so the
 * answer never exceeds the budget; the table has capacity/unit columns.
 */
export function knapsack(adapters: readonly PolicyAdapter[], capacityBytes: number, unitBytes = 1024): KnapsackResult {
  const W = Math.floor(capacityBytes / unitBytes);
  const weights = adapters.map((a) => Math.ceil(a.sizeBytes / unitBytes));
  const n = adapters.length;
  // best[w] = max value with weight ≤ w; keep[i][w] = item i taken at w.
  const best = new Float64Array(W + 1);
  const keep: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const wi = weights[i] as number;
    const vi = (adapters[i] as PolicyAdapter).share;
    const take = new Uint8Array(W + 1);
    for (let w = W; w >= wi; w--) {
      const candidate = (best[w - wi] as number) + vi;
      if (candidate > (best[w] as number) + 1e-15) {
        best[w] = candidate;
        take[w] = 1;
      }
    }
    keep.push(take);
  }
  const chosen: string[] = [];
  let w = W;
  for (let i = n - 1; i >= 0; i--) {
    if ((keep[i] as Uint8Array)[w] === 1) {
      chosen.push((adapters[i] as PolicyAdapter).id);
      w -= weights[i] as number;
    }
  }
  const set = new Set(chosen);
  const picked = adapters.filter((a) => set.has(a.id));
  return {
    chosen: picked.map((a) => a.id),
    coverage: picked.reduce((s, a) => s + a.share, 0),
    bytes: picked.reduce((s, a) => s + a.sizeBytes, 0),
  };
}

/** The exact optimum by enumeration (tests only: n ≤ 20). */
export function knapsackBruteForce(
  adapters: readonly PolicyAdapter[],
  capacityBytes: number,
  unitBytes = 1024,
): number {
  let best = 0;
  const n = adapters.length;
  for (let mask = 0; mask < 1 << n; mask++) {
    let units = 0,
      value = 0;
    for (let i = 0; i < n; i++) {
      if (mask & (1 << i)) {
        units += Math.ceil((adapters[i] as PolicyAdapter).sizeBytes / unitBytes);
        value += (adapters[i] as PolicyAdapter).share;
      }
    }
    if (units <= Math.floor(capacityBytes / unitBytes)) best = Math.max(best, value);
  }
  return best;
}

export interface PlanInput {
  adapters: readonly PolicyAdapter[];
  /** Byte budget of one LoRA server. */
  serverCapacityBytes: number;
  /** Required probability that a request's adapter is resident on arrival (from the TTFT target). */
  coverage: number;
  /** Requests per second the fleet must carry, and tokens per request step. */
  requestRate: number;
  decodeTokensPerRequest: number;
  /** Mean time per output token target, ms. */
  tpotMs: number;
  maxServers?: number;
}

export interface Plan {
  loraServers: number;
  residentAdapters: string[];
  coverage: number;
  residentBytes: number;
  /** Predicted LoRA microseconds per step on one server at this rate. */
  predictedLoraStepUs: number;
  meetsTtft: boolean;
  meetsTpot: boolean;
  reason: string;
}

/** The smallest LoRA-server count (and resident set) meeting both targets. */
export function planCapacity(input: PlanInput, cost: CostModel): Plan {
  const maxServers = input.maxServers ?? 256;
  let last: Plan | undefined;
  for (let servers = 1; servers <= maxServers; servers++) {
    const capacity = servers * input.serverCapacityBytes;
    const resident = knapsack(input.adapters, capacity, Math.max(1024, Math.floor(capacity / 20000)));
    // Concurrent decoding requests per server ≈ rate × tokens per request × step time; estimate
    // the step's LoRA work from the traffic-weighted mean rank.
    const meanRank =
      input.adapters.reduce((s, a) => s + a.share * a.rank, 0) /
      Math.max(
        1e-9,
        input.adapters.reduce((s, a) => s + a.share, 0),
      );
    const tokensPerStep = Math.max(
      1,
      (input.requestRate * input.decodeTokensPerRequest * (input.tpotMs / 1000)) / servers,
    );
    const adaptersPerStep = Math.min(resident.chosen.length, tokensPerStep);
    const loraUs =
      cost.loraStepUs({ tokens: tokensPerStep, adapters: [{ tokens: tokensPerStep, rank: meanRank }] }) +
      cost.calibration.loraUsPerAdapter * adaptersPerStep;
    const meetsTtft = resident.coverage + 1e-12 >= input.coverage;
    const meetsTpot = loraUs / 1000 <= input.tpotMs;
    last = {
      loraServers: servers,
      residentAdapters: resident.chosen,
      coverage: resident.coverage,
      residentBytes: resident.bytes,
      predictedLoraStepUs: loraUs,
      meetsTtft,
      meetsTpot,
      reason:
        meetsTtft && meetsTpot
          ? "meets both targets"
          : !meetsTtft
            ? "coverage below target"
            : "LoRA step time above the TPOT target",
    };
    if (meetsTtft && meetsTpot) return last;
    if (resident.chosen.length === input.adapters.length && !meetsTtft) break; // cannot do better
  }
  return last as Plan;
}
