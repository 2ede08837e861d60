/** @loramesh/mesh: plumbing the services share (Redis, BullMQ adapter jobs, registration, placement). */
export { internalAdapterId, NAME_PATTERN } from "./adapter-id";
export { adapterCacheOptions } from "./adapter-cache-options";
export {
  AdapterMaterializer,
  type AdapterOrigin,
  type Materialized,
  type MaterializeRequest,
  type PeerPath,
} from "./adapter-materializer";
export { adapterPeerService, fetchFromPeer, type HeldAdapterLookup } from "./adapter-peer";
export {
  fetchFromPeerRma,
  type PeerRmaHolder,
  type PeerRmaReader,
  type RmaFile,
  type RmaRegion,
} from "./adapter-peer-rma";
export { ExecutorAgent, type ExecutorState } from "./executor-agent";
export { applyDataplanePriority, executorOptions } from "./executor-options";
export { unary } from "./grpc-call";
export {
  ADAPTER_JOB_ATTEMPTS,
  ADAPTER_JOB_OPTIONS,
  type AdapterJobData,
  type AdapterJobHandlers,
  adapterJobId,
  type AdapterJobKind,
  AdapterJobQueues,
  adapterQueueName,
  type AddJobOptions,
  type PeerRef,
  startAdapterJobWorker,
} from "./jobs";
export { PlacementCache } from "./placement-cache";
export { connectRedis, createRedis, redisOptionsFromUrl } from "./redis";
export { REDIS_KEYS } from "./redis-keys";
