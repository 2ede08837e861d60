/** @loramesh/core: what every loramesh package shares, with no service logic of its own. */
export * from "./config";
export * from "./embedded-redis";
export * from "./errors";
export * from "./grpc-handlers";
export * from "./grpc-server";
export * from "./grpc-status";
export * from "./logging";
export * from "./service-main";
export * from "./shutdown";
