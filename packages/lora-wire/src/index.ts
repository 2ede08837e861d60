/**
 * @loramesh/lora-wire: the worker↔LoRA-server wire in one place. Site ids both ways, the work and
 * reply codecs, the shared-memory rings, the UCX channel, reply matching and typed reply errors, and both ends of
 * the Execute stream. The base worker and the LoRA server use it; neither defines any of it.
 */
export {
  decodeOpen,
  decodeReply,
  decodeWork,
  encodeErrorReply,
  encodeOpen,
  encodeReply,
  encodeWork,
  type ReceivedWork,
  type SiteWork,
  type StreamOpen,
  type WireTransport,
} from "./messages";
export { PendingReplies } from "./pending-replies";
export { errorOfReply, replyErrorOf, type ReplyError } from "./reply-errors";
export {
  DEFAULT_RING_BYTES,
  reapRingSegments,
  RING_SITE_IDS,
  RingServer,
  type RingServerOptions,
  ShmRing,
} from "./shm-ring";
export { siteFromProto, siteToProto } from "./sites";
export { LoraStreamClient, WIRE_MESSAGE_LIMITS, type LoraStreamClientOptions } from "./stream-client";
export { ucxSupport, UcxChannel, UcxServer, type UcxServerOptions } from "./ucx-channel";
export { UcxPeerRegions, ucxPeerReader } from "./ucx-peer-regions";
export { serveLoraStream, type LoraStreamSessionOptions, type SiteExecutor } from "./stream-session";
export {
  bf16ToFloat,
  decodeTensor,
  elementBytes,
  elementCount,
  encodeTensor,
  floatToBf16,
  MAX_TENSOR_ELEMENTS,
  type TensorData,
} from "./tensor-codec";
