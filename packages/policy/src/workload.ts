/** Synthetic workloads in the spirit of the papers: Zipf popularity, Poisson arrivals, drift. */
import { SeededRandom, zipfWeights } from "./random";

export interface WorkloadSpec {
  adapters: number;
  /** Ranks drawn uniformly from this list. */
  ranks: number[];
  /** Zipf exponent of adapter popularity. */
  zipf: number;
  /** Requests per second. */
  rate: number;
  /** Seconds of traffic. */
  duration: number;
  promptMedian: number;
  outputMedian: number;
  lengthSigma: number;
  /** Bytes of an adapter per unit of rank (true-rank storage). */
  bytesPerRank: number;
  /** At this fraction of the run the popular set changes (none when absent). */
  driftAt?: number;
  seed: number;
}

export const DEFAULT_WORKLOAD: WorkloadSpec = {
  adapters: 256,
  ranks: [8, 16, 32, 64, 128],
  zipf: 1.2,
  rate: 20,
  duration: 60,
  promptMedian: 256,
  outputMedian: 64,
  lengthSigma: 0.6,
  bytesPerRank: 4096 * 2 * 2 * 4 * 32, // 32 layers × 4 sites-ish of 4096-wide bf16 A and B
  seed: 1,
};

export interface AdapterSpec {
  id: string;
  rank: number;
  sizeBytes: number;
  /** Popularity before and after the drift. */
  weight: number;
  driftWeight: number;
}

export interface Request {
  id: number;
  arrival: number;
  adapter: string;
  promptTokens: number;
  outputTokens: number;
}

export function makeAdapters(spec: WorkloadSpec): AdapterSpec[] {
  const rng = new SeededRandom(spec.seed * 7919 + 1);
  const weights = zipfWeights(spec.adapters, spec.zipf);
  // After the drift the popularity ranking is reversed within a rotated window.
  const shift = Math.floor(spec.adapters / 3);
  return Array.from({ length: spec.adapters }, (_, i) => {
    const rank = spec.ranks[rng.int(0, spec.ranks.length)] as number;
    return {
      id: `a${String(i).padStart(4, "0")}`,
      rank,
      sizeBytes: rank * spec.bytesPerRank,
      weight: weights[i] as number,
      driftWeight: weights[(i + shift) % spec.adapters] as number,
    };
  });
}

export function makeRequests(spec: WorkloadSpec, adapters: readonly AdapterSpec[]): Request[] {
  const rng = new SeededRandom(spec.seed);
  const before = adapters.map((a) => a.weight);
  const after = adapters.map((a) => a.driftWeight);
  const totalBefore = before.reduce((a, b) => a + b, 0),
    totalAfter = after.reduce((a, b) => a + b, 0);
  const requests: Request[] = [];
  let t = 0;
  for (let id = 0; ; id++) {
    t += rng.exponential(spec.rate);
    if (t > spec.duration) break;
    const drifted = spec.driftAt !== undefined && t > spec.duration * spec.driftAt;
    const index = drifted ? rng.weighted(after, totalAfter) : rng.weighted(before, totalBefore);
    requests.push({
      id,
      arrival: t,
      adapter: (adapters[index] as AdapterSpec).id,
      promptTokens: Math.max(1, Math.round(rng.logNormal(spec.promptMedian, spec.lengthSigma))),
      outputTokens: Math.max(1, Math.round(rng.logNormal(spec.outputMedian, spec.lengthSigma))),
    });
  }
  return requests;
}
