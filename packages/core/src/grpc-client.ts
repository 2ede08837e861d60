/**
 * The client side of the gRPC contract: one factory for channels (message limits, keepalive, and a
 * service-config retry policy for idempotent unary methods), and the one mapper turning a failed
 * call back into a typed domain error.
 */
import {
  credentials,
  Metadata,
  status,
  type ChannelCredentials,
  type ChannelOptions,
  type ServiceError,
} from "@grpc/grpc-js";
import {
  AlreadyExistsError,
  CancelledError,
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  LoraMeshError,
  NotFoundError,
  PermissionDeniedError,
  ResourceExhaustedError,
  UnauthenticatedError,
  UnavailableError,
  UnimplementedError,
  type ErrorKind,
} from "@loramesh/errors";
import { clusterClientOptions } from "./cluster-auth";
import { GRPC_CHANNEL_OPTIONS } from "./grpc-server";
import { ERROR_CLASS_METADATA_KEY } from "./grpc-status";

/** A peer's failure that has no domain class of its own (INTERNAL, UNKNOWN, DATA_LOSS, ...). */
export class PeerInternalError extends LoraMeshError {
  readonly kind = "internal";
}

type ErrorClass = new (message: string, options?: { cause?: unknown }) => LoraMeshError;

const CLASS_OF_CODE: Partial<Record<status, ErrorClass>> = {
  [status.INVALID_ARGUMENT]: InvalidArgumentError,
  [status.NOT_FOUND]: NotFoundError,
  [status.ALREADY_EXISTS]: AlreadyExistsError,
  [status.UNAUTHENTICATED]: UnauthenticatedError,
  [status.PERMISSION_DENIED]: PermissionDeniedError,
  [status.RESOURCE_EXHAUSTED]: ResourceExhaustedError,
  [status.FAILED_PRECONDITION]: FailedPreconditionError,
  [status.UNAVAILABLE]: UnavailableError,
  [status.DEADLINE_EXCEEDED]: DeadlineExceededError,
  [status.CANCELLED]: CancelledError,
  [status.UNIMPLEMENTED]: UnimplementedError,
};

/** Codes a relaying service passes on as they are; the rest say the peer itself failed. */
const RELAYED: ReadonlySet<status> = new Set([
  status.INVALID_ARGUMENT,
  status.NOT_FOUND,
  status.ALREADY_EXISTS,
  status.RESOURCE_EXHAUSTED,
  status.FAILED_PRECONDITION,
  status.UNAVAILABLE,
  status.DEADLINE_EXCEEDED,
  status.CANCELLED,
  status.UNIMPLEMENTED,
]);

export function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === "number" && "details" in err;
}

export interface FromServiceErrorOptions {
  /**
   * Set when this process relays the failure to its own caller (e.g. "the provisioner"): a peer's
   * INTERNAL, UNAUTHENTICATED or other hop-local failure becomes UnavailableError, and an INTERNAL
   * message becomes "<peer> failed" so internals never pass through.
   */
  peer?: string;
}

/**
 * The one client-side mapper: a grpc-js ServiceError (code, details, `loramesh-error-class`
 * trailer) back to the matching domain error, with the ServiceError as `cause`. Other values pass
 * through (non-Errors wrapped).
 */
export function fromServiceError(err: unknown, options: FromServiceErrorOptions = {}): Error {
  if (err instanceof LoraMeshError) return err;
  if (!isServiceError(err)) return err instanceof Error ? err : new Error(String(err));
  const { peer } = options;
  const details = err.details || `${peer ?? "the peer"} failed`;
  if (peer !== undefined) {
    if (!RELAYED.has(err.code))
      return new UnavailableError(err.code === status.INTERNAL ? `${peer} failed` : details, { cause: err });
  }
  const sentClass = err.metadata?.get(ERROR_CLASS_METADATA_KEY)[0];
  // The trailer names the server's class; it is honoured when it agrees with the code (a
  // ConfigError, say, has no client-side twin and arrives as its code's class).
  const named = Object.values(CLASS_OF_CODE).find((c) => c.name === sentClass);
  const Class = named !== undefined && named === CLASS_OF_CODE[err.code] ? named : CLASS_OF_CODE[err.code];
  if (Class === undefined) return new PeerInternalError(details, { cause: err });
  return new Class(details, { cause: err });
}

/** The domain error kind a gRPC code maps back to (INTERNAL and unknown codes: "internal"). */
export function kindOfCode(code: status): ErrorKind {
  const Class = CLASS_OF_CODE[code];
  return Class ? new Class("").kind : "internal";
}

/** Retry policy for idempotent unary methods: UNAVAILABLE only, exponential backoff (grpc-js adds jitter). */
export const UNARY_RETRY_POLICY = {
  maxAttempts: 5,
  initialBackoff: "0.1s",
  maxBackoff: "2s",
  backoffMultiplier: 2,
  retryableStatusCodes: ["UNAVAILABLE"],
} as const;

export interface ClientChannelSpec {
  /** Fully qualified service name, e.g. `loramesh.v1.ProvisionerService`. */
  service: string;
  /** Idempotent unary methods (proto names, e.g. `Heartbeat`) that grpc-js may retry on UNAVAILABLE. */
  retryMethods?: readonly string[];
}

/** Channel options for a loramesh client: the servers' message limits, keepalive, retries. */
export function clientChannelOptions(spec: ClientChannelSpec): ChannelOptions {
  const methods = spec.retryMethods ?? [];
  const serviceConfig = {
    methodConfig:
      methods.length === 0
        ? []
        : [{ name: methods.map((method) => ({ service: spec.service, method })), retryPolicy: UNARY_RETRY_POLICY }],
  };
  return {
    ...GRPC_CHANNEL_OPTIONS,
    "grpc.enable_retries": 1,
    "grpc.service_config": JSON.stringify(serviceConfig),
  };
}

type ClientConstructor<C> = new (
  address: string,
  creds: ChannelCredentials,
  options?: ChannelOptions & ReturnType<typeof clusterClientOptions>,
) => C;

/** The one client factory: a generated client on a channel with loramesh's options and the cluster token. */
export function createClient<C>(
  Client: ClientConstructor<C>,
  address: string,
  spec: ClientChannelSpec,
  creds: ChannelCredentials = credentials.createInsecure(),
): C {
  return new Client(address, creds, { ...clientChannelOptions(spec), ...clusterClientOptions() });
}

/** Metadata for a call that should wait for the peer to come up (until its deadline) instead of failing fast. */
export function waitForReadyMetadata(): Metadata {
  return new Metadata({ waitForReady: true });
}
