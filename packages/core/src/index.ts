/** @loramesh/core: what every loramesh package shares, with no service logic of its own. */
export * from "./config";
export * from "./defaults";
export * from "./embedded-redis";
export * from "./errors";
export * from "./grpc-client";
export * from "./grpc-handlers";
export * from "./grpc-middleware";
export * from "./grpc-server";
export * from "./grpc-status";
export * from "./logging";
export * from "./service-main";
export * from "./shutdown";
export * from "./tensor-codec";
