// Fixtures shared by this package's tests (not exported from the package).
import type { ClusterSpec } from "./simulator";
import type { StepShapeSample } from "./step-fit";

/** The validation's topology: one worker and one LoRA server with the engine's limits. */
export const validationCluster: ClusterSpec = {
  executors: 1,
  capacityBytes: 8 * 1024 ** 3,
  maxBatch: 64,
  maxBatchTokens: 512,
  mode: "coupled",
  loraServers: 1,
  kernel: "true",
  rankAwareRouting: true,
  replaceEvery: 0,
};

/** `count` one-sequence decode steps of `rankSum` with mean period `meanUs` and a 100 µs spread. */
export function loneDecodeSteps(rankSum: number, meanUs: number, count: number): StepShapeSample {
  return {
    sequences: 1,
    tokens: 1,
    prefillTokens: 0,
    rankSum,
    count,
    sumUs: count * meanUs,
    sumSqUs: count * (meanUs ** 2 + 100 ** 2),
  };
}
