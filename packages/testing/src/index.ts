/** @loramesh/testing: helpers for tests that start real servers (Redis, grpc-js). */
export { startTestGrpcServer, type TestGrpcServer } from "./grpc";
export { captureLogger, type CapturedLogger } from "./logger";
export { startTestRedis, type TestRedis } from "./redis";
export { processAlive, waitFor } from "./wait";
export { REPO_ROOT, GOLDEN_DIR } from "./paths";
export { f32Bytes, writeSafetensors, type RawTensor } from "./safetensors-writer";
export { FuzzRng, mutateAdapterConfig, mutateSafetensors, readAdapterConfig } from "./fuzz";
export { adapterRuleBroken, configRuleBroken, weightsRuleBroken } from "./adapter-oracle";
export {
  NETNS_PREFIX,
  NetnsNetwork,
  netnsUnavailableReason,
  reapDeadNetworks,
  stopChild,
  type NetnsHost,
  type SpawnInOptions,
} from "./netns-network";
export {
  startNetnsMesh,
  type MeshProcess,
  type MeshService,
  type NetnsMesh,
  type NetnsMeshOptions,
} from "./netns-mesh";
export { startAdapterFileServer, type AdapterFileServer, type AdapterFileServerOptions } from "./adapter-file-server";
export { startTestS3Server, type TestS3Server } from "./s3-server";
export { SimulatedLink, type LinkOptions } from "./simulated-link";
