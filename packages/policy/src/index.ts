/** @loramesh/policy: placement policies, the cost model, provisioning and the simulator. */
export {
  type BatchShape,
  type Calibration,
  CostModel,
  DEFAULT_CALIBRATION,
  fitLine,
  type RankMode,
} from "./cost-model";
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
export { SeededRandom, zipfWeights } from "./random";
export { type ClusterSpec, percentile, serviceableRate, simulate, type SimulationResult, type Slo } from "./simulator";
export {
  type AdapterSpec,
  DEFAULT_WORKLOAD,
  makeAdapters,
  makeRequests,
  type Request,
  type WorkloadSpec,
} from "./workload";
