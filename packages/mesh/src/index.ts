/** @loramesh/mesh: plumbing the services share (Redis, BullMQ adapter jobs, registration, placement). */
export * from "./adapter-id";
export * from "./executor-agent";
export * from "./executor-options";
export * from "./grpc-call";
export * from "./jobs";
export * from "./placement-cache";
export * from "./redis";
export { REDIS_KEYS } from "./redis-keys";
