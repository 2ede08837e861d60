/** @loramesh/policy: placement policies, the cost models, provisioning and the cluster simulator. */
export { AdapterCache, type CacheEntry } from "./adapter-cache";
export {
  type BatchShape,
  type Calibration,
  CostModel,
  DEFAULT_CALIBRATION,
  fitLine,
  interpolate,
  type RankMode,
} from "./cost-model";
export { EventQueue, type TimedEvent } from "./event-queue";
export { GPU_CLUSTER_DEFAULTS, gpuCluster, type GpuClusterOptions, type GpuClusterSetup } from "./gpu-cluster";
export { type GpuCalibration, GpuCostModel, H100_DERIVED, type Link, type StepShape } from "./gpu-cost-model";
export {
  activeParams,
  adapterBytes,
  expertBytes,
  expertLoraPerRank,
  expertsTouched,
  kvBytesPerToken,
  loraBytesPerTokenRank,
  type LoraTargets,
  MODEL_PROFILE_NAMES,
  MODEL_PROFILES,
  modelProfile,
  type ModelProfile,
  sharedParams,
  totalParams,
  weightBytes,
} from "./model-profiles";
export {
  type Assignment,
  imbalance,
  type PlacementPolicy,
  POLICY_NAMES,
  type PolicyAdapter,
  policyByName,
  type PolicyExecutor,
  RandomPolicy,
  type RankAwareOptions,
  RankAwarePolicy,
  rankClass,
  RebalancingPolicy,
  RoundRobinPolicy,
} from "./placement";
export {
  knapsack,
  knapsackBruteForce,
  type KnapsackResult,
  type Plan,
  planCapacity,
  type PlanInput,
} from "./provisioning";
export { normalQuantile, SeededRandom, stratifiedNormals, zipfWeights } from "./random";
export { smallestMeeting } from "./smallest-meeting";
export {
  bareCalibration,
  fitRequestOverheads,
  fitStackOverheads,
  hopBusySlope,
  hybridBusyHopSteps,
  medianOverRounds,
  pooledOverRounds,
  TAIL_QUANTILE,
  MAX_BUSY_HOP_STEPS,
  HOP_WAKE_TAU_S,
  type MeasuredProbe,
  type ProbeSimulator,
  type ProbeSpec,
  type ProbeSummary,
  type StackProbes,
} from "./stack-fit";
export {
  fitStepPeriods,
  type IdleScale,
  slopesOf,
  type StepPeriodFit,
  type StepPeriodShape,
  stepPeriodUs,
  type StepShapeSample,
  type StepSlopes,
} from "./step-fit";
export {
  FIT_STATE,
  fitRoundScale,
  pooledOverStates,
  ROUND_HOP_SCALE_BOUNDS,
  type RoundState,
  roundStepScale,
  type StateRound,
  withRoundState,
} from "./round-states";
export {
  fitStallSeconds,
  MAX_STALL_S,
  rebalancePauses,
  STALL_WINDOW_S,
  stallEndS,
  stallExcessMs,
  type TimedRequests,
} from "./rebalance-stall";
export { cpuSimCost, gpuSimCost, hopIdleUs, type SimCost, toSimCost } from "./sim-cost";
export { type ClusterSpec, serviceableRate, type ServingMode, simulate } from "./simulator";
export { percentile, type SimulationResult, type Slo } from "./sim-stats";
export {
  type AdapterSpec,
  DEFAULT_WORKLOAD,
  makeAdapters,
  makeRequests,
  type Request,
  type WorkloadSpec,
} from "./workload";
export {
  confirmedSentinel,
  disturbanceReasons,
  disturbedEntries,
  GUARD_THRESHOLDS,
  type GuardedAttempt,
  type GuardedRound,
  guardRound,
  type GuardThresholds,
  MAX_RERUNS,
  type RoundSignals,
  sentinelBaseline,
  SENTINEL_RETIMES,
} from "./interference";
