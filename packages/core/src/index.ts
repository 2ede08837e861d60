/** @loramesh/core: what every loramesh package shares, with no service logic of its own. */
export {
  addressOption,
  booleanOption,
  type ConfigOf,
  enumOption,
  formatOptionsHelp,
  intOption,
  loadConfig,
  type LoadedConfig,
  numberOption,
  type OptionSpec,
  type OptionSpecs,
  stringOption,
} from "./config";
export {
  type EmbeddedRedis,
  type EmbeddedRedisOptions,
  ping,
  redisConnectionOptions,
  startEmbeddedRedis,
} from "./embedded-redis";
export { bidiStreamHandler, serverStreamHandler, unaryHandler } from "./grpc-handlers";
export {
  GRPC_CHANNEL_OPTIONS,
  HEALTH_SERVICE,
  loadReflectionPackage,
  MAX_MESSAGE_BYTES,
  type RunningGrpcServer,
  type ServiceRegistration,
  startGrpcServer,
  type StartGrpcServerOptions,
} from "./grpc-server";
export { ERROR_CLASS_METADATA_KEY, GENERIC_INTERNAL_MESSAGE, grpcCodeOf, toGrpcStatus } from "./grpc-status";
export { createLogger, isLogLevel, type LogFields, type Logger, type LoggerOptions, type LogLevel } from "./logging";
export {
  type ListeningMessage,
  runServiceProcess,
  type ServiceInstance,
  type ServiceProcessOptions,
} from "./service-main";
export { installGracefulShutdown, type ShutdownOptions } from "./shutdown";
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
