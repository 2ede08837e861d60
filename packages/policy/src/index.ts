/** @loramesh/policy: placement policies, the cost models, provisioning and the cluster simulator. */
export * from "./adapter-cache";
export * from "./cost-model";
export * from "./event-queue";
export * from "./gpu-cluster";
export * from "./gpu-cost-model";
export * from "./model-profiles";
export * from "./placement";
export * from "./provisioning";
export * from "./random";
export * from "./sim-cost";
export * from "./simulator";
export * from "./workload";
