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
export {
  CLUSTER_TOKEN_ENV,
  CLUSTER_TOKEN_METADATA_KEY,
  clusterClientOptions,
  clusterToken,
  clusterTokenInterceptor,
  clusterTokenServerInterceptor,
  generateClusterToken,
  hasClusterToken,
  MIN_CLUSTER_TOKEN_LENGTH,
  setClusterToken,
} from "./cluster-auth";
export { DEFAULT_LISTEN_ADDRESS, DEFAULT_MAX_TOKENS, DEFAULT_ROUTER_ADDRESS } from "./defaults";
export {
  clientChannelOptions,
  type ClientChannelSpec,
  createClient,
  fromServiceError,
  type FromServiceErrorOptions,
  isServiceError,
  kindOfCode,
  PeerInternalError,
  UNARY_RETRY_POLICY,
  waitForReadyMetadata,
} from "./grpc-client";
export { bidiStreamHandler, serverStreamHandler, unaryHandler } from "./grpc-handlers";
export {
  authMiddleware,
  type CallContext,
  callContext,
  defaultMiddleware,
  metricsMiddleware,
  type Middleware,
  runChain,
  type ServerCallLike,
  spanAttributesMiddleware,
  statusCodeOf,
} from "./grpc-middleware";
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
export {
  ERROR_CLASS_METADATA_KEY,
  RETRY_AFTER_METADATA_KEY,
  GENERIC_INTERNAL_MESSAGE,
  grpcCodeOf,
  toGrpcStatus,
} from "./grpc-status";
export {
  createLogger,
  isLogFormat,
  isLogLevel,
  type LogFields,
  type LogFormat,
  type Logger,
  type LoggerOptions,
  type LogLevel,
  traceFields,
} from "./logging";
export {
  type ListeningMessage,
  runServiceProcess,
  type ServiceInstance,
  type ServiceProcessOptions,
} from "./service-main";
export { installGracefulShutdown, type ShutdownOptions } from "./shutdown";
