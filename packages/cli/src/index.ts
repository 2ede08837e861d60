/** @loramesh/cli as a library: the local cluster launcher (used by tests and benchmarks). */
export {
  startLocalCluster,
  type ClusterProcess,
  type LocalCluster,
  type LocalClusterOptions,
  type ServiceRestart,
} from "./local-cluster";
export { BUNDLED_ADAPTERS, BUNDLED_MODEL } from "./commands/up";
export { nearestSource, readAdapterSources } from "./load-generator";
export { SHAPES, type SynthShape } from "./synth/shapes";
export {
  synthModel,
  shapeByName,
  LORA_TARGETS,
  type SynthAdapterSpec,
  type SynthDtype,
  type SynthOptions,
} from "./synth/synth-model";
