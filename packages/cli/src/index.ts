/** @loramesh/cli as a library: the local cluster launcher (used by tests and benchmarks). */
export { startLocalCluster, type ClusterProcess, type LocalCluster, type LocalClusterOptions } from "./local-cluster";
export { BUNDLED_ADAPTERS, BUNDLED_MODEL } from "./commands/up";
