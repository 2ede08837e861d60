/**
 * The loramesh/v1 protocol: ts-proto messages and grpc-js service definitions generated from
 * `proto/`, plus the path of the buf-built descriptor set that feeds server reflection.
 */
import { join } from "node:path";

export * as health from "./gen/grpc/health/v1/health";
export * from "./gen/loramesh/v1/api";
export * from "./gen/loramesh/v1/base_worker";
export * from "./gen/loramesh/v1/common";
export * from "./gen/loramesh/v1/lora_server";
export * from "./gen/loramesh/v1/provisioner";
export * from "./gen/loramesh/v1/tensor";
// Every generated module declares these helpers; name one copy so the star exports do not clash.
export { protobufFileName, protobufPackage } from "./gen/loramesh/v1/common";
export type { DeepPartial, Exact, MessageFns } from "./gen/loramesh/v1/common";

/** Absolute path of the FileDescriptorSet built by `buf build` from `proto/`. */
export const DESCRIPTOR_SET_PATH = join(__dirname, "..", "descriptors.binpb");

/** Fully qualified names of the services each loramesh process serves. */
export const SERVICE_NAMES = {
  router: ["loramesh.v1.InferenceService", "loramesh.v1.AdapterService"],
  provisioner: ["loramesh.v1.ProvisionerService"],
  baseWorker: ["loramesh.v1.BaseWorkerService"],
  loraServer: ["loramesh.v1.LoraServerService"],
} as const;
