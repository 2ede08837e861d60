/** @loramesh/policy: placement policies, the cost model, provisioning and the simulator. */
export * from "./cost-model";
export * from "./placement";
export * from "./provisioning";
export * from "./random";
export * from "./simulator";
export * from "./workload";
