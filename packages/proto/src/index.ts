/**
 * The loramesh/v1 protocol: ts-proto messages and grpc-js service definitions generated from
 * `proto/`, plus the path of the buf-built descriptor set that feeds server reflection.
 */
import { join } from "node:path";

export * as health from "./gen/grpc/health/v1/health";
export {
  AdapterServiceClient,
  type AdapterServiceServer,
  AdapterServiceService,
  CompleteResponse,
  DeleteAdapterRequest,
  DeleteAdapterResponse,
  GenerateRequest,
  GenerateResponse,
  GetAdapterRequest,
  InferenceServiceClient,
  type InferenceServiceServer,
  InferenceServiceService,
  ListAdaptersRequest,
  ListAdaptersResponse,
  RegisterAdapterRequest,
  RegisterAdapterResponse,
  WatchAdapterLoadRequest,
} from "./gen/loramesh/v1/api";
export {
  BaseWorkerServiceClient,
  type BaseWorkerServiceServer,
  BaseWorkerServiceService,
  BaseWorkerStats,
  BaseWorkerStatsRequest,
  CancelSequenceRequest,
  CancelSequenceResponse,
  SequenceEvent,
  SubmitSequenceRequest,
} from "./gen/loramesh/v1/base_worker";
export {
  Adapter,
  AdapterSource,
  AdapterState,
  adapterStateFromJSON,
  adapterStateToJSON,
  FinishReason,
  finishReasonFromJSON,
  finishReasonToJSON,
  JobState,
  jobStateFromJSON,
  jobStateToJSON,
  LoadJobStatus,
  SamplingParams,
  SloClass,
  sloClassFromJSON,
  sloClassToJSON,
  Timings,
  TokenIds,
  Usage,
} from "./gen/loramesh/v1/common";
export {
  AttachSharedMemoryRequest,
  AttachSharedMemoryResponse,
  AttachUcxRequest,
  AttachUcxResponse,
  LoadAdapterRequest,
  LoadAdapterResponse,
  LoraResult,
  LoraServerServiceClient,
  type LoraServerServiceServer,
  LoraServerServiceService,
  LoraServerStats,
  LoraServerStatsRequest,
  LoraSite,
  loraSiteFromJSON,
  loraSiteToJSON,
  LoraStreamOpen,
  LoraStreamRequest,
  LoraWork,
  SharedMemorySlice,
  UnloadAdapterRequest,
  UnloadAdapterResponse,
} from "./gen/loramesh/v1/lora_server";
export {
  AdapterPlacement,
  ExecutorInfo,
  ExecutorKind,
  executorKindFromJSON,
  executorKindToJSON,
  ExecutorLoad,
  GetLoadJobRequest,
  GetPlacementRequest,
  HeartbeatRequest,
  HeartbeatRequest_AdapterRequestsEntry,
  HeartbeatResponse,
  LoraMode,
  loraModeFromJSON,
  loraModeToJSON,
  MoveAdapterRequest,
  MoveAdapterResponse,
  Placement,
  PlacementUpdate,
  ProvisionerServiceClient,
  type ProvisionerServiceServer,
  ProvisionerServiceService,
  RegisterExecutorRequest,
  RegisterExecutorResponse,
  TenantAdapterRequest,
  TenantDeleteAdapterResponse,
  TenantListAdaptersRequest,
  TenantListAdaptersResponse,
  TenantRegisterAdapterRequest,
  TenantRegisterAdapterResponse,
  WatchPlacementRequest,
  PrefetchAdapterRequest,
  PrefetchAdapterResponse,
  ReportUnreachableRequest,
  ReportUnreachableResponse,
} from "./gen/loramesh/v1/provisioner";
export {
  AdapterFileChunk,
  AdapterPeerServiceClient,
  AdapterPeerServiceService,
  AdapterRmaFile,
  AdapterRmaOffer,
  FetchAdapterRequest,
  type AdapterPeerServiceServer,
} from "./gen/loramesh/v1/adapter_peer";
export { DType, dTypeFromJSON, dTypeToJSON, Tensor } from "./gen/loramesh/v1/tensor";
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
  adapterPeer: ["loramesh.v1.AdapterPeerService"],
} as const;
