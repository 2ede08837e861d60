/** @loramesh/sdk: a typed gRPC client for loramesh. */
export { LoraMeshClient, type GenerateInput } from "./client";
export { type CallSettings, type ConnectionOptions } from "./connection";
export { LoraMeshClientError, toClientError } from "./errors";
export { checkHealth, waitForServing, type ServingStatus } from "./health";
export { status as GrpcStatus } from "@grpc/grpc-js";
