import { Metadata, status, type ServiceError, type StatusObject } from "@grpc/grpc-js";
import { describeError, isLoraMeshError, ResourceExhaustedError, type ErrorKind } from "@loramesh/errors";
import type { Logger } from "./logging";

const CODE_OF_KIND: Record<ErrorKind, status> = {
  "invalid-argument": status.INVALID_ARGUMENT,
  "not-found": status.NOT_FOUND,
  "already-exists": status.ALREADY_EXISTS,
  unauthenticated: status.UNAUTHENTICATED,
  "permission-denied": status.PERMISSION_DENIED,
  "resource-exhausted": status.RESOURCE_EXHAUSTED,
  "failed-precondition": status.FAILED_PRECONDITION,
  unavailable: status.UNAVAILABLE,
  "deadline-exceeded": status.DEADLINE_EXCEEDED,
  cancelled: status.CANCELLED,
  unimplemented: status.UNIMPLEMENTED,
  internal: status.INTERNAL,
};

/** What unknown errors become on the wire: internals never leak to callers. */
export const GENERIC_INTERNAL_MESSAGE = "internal error";

/** Metadata key carrying the domain error class name, so the SDK can rebuild a typed error. */
export const ERROR_CLASS_METADATA_KEY = "loramesh-error-class";

/** Metadata key of a refusal's retry hint in milliseconds (RESOURCE_EXHAUSTED from admission). */
export const RETRY_AFTER_METADATA_KEY = "retry-after-ms";

/**
 * The one mapping from thrown values to gRPC statuses. Domain errors keep their message; anything
 * else becomes INTERNAL with a generic message and its details go to the log.
 */
export function toGrpcStatus(err: unknown, logger?: Logger): Partial<StatusObject> & ServiceError {
  const metadata = new Metadata();
  if (isLoraMeshError(err)) {
    metadata.set(ERROR_CLASS_METADATA_KEY, err.name);
    if (err instanceof ResourceExhaustedError && err.retryAfterMs !== undefined)
      metadata.set(RETRY_AFTER_METADATA_KEY, String(Math.ceil(err.retryAfterMs)));
    return serviceError(CODE_OF_KIND[err.kind], err.message, metadata);
  }
  logger?.error("unhandled error in a request handler", { error: describeError(err) });
  return serviceError(status.INTERNAL, GENERIC_INTERNAL_MESSAGE, metadata);
}

/** The gRPC status code a domain error kind maps to. */
export function grpcCodeOf(kind: ErrorKind): status {
  return CODE_OF_KIND[kind];
}

function serviceError(code: status, details: string, metadata: Metadata): ServiceError {
  const err = new Error(details) as ServiceError;
  err.code = code;
  err.details = details;
  err.metadata = metadata;
  return err;
}
