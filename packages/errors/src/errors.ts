/**
 * Typed domain errors. Code anywhere in loramesh throws these; the gRPC layer maps them to status
 * codes in exactly one place (`grpc-status.ts`). Anything that is not a `LoraMeshError` is a bug and
 * reaches clients only as a generic INTERNAL error.
 */

/** The kinds of failure a caller can act on; each maps to one gRPC status code. */
export type ErrorKind =
  | "invalid-argument"
  | "not-found"
  | "already-exists"
  | "unauthenticated"
  | "permission-denied"
  | "resource-exhausted"
  | "failed-precondition"
  | "unavailable"
  | "deadline-exceeded"
  | "cancelled"
  | "unimplemented"
  | "internal";

/** Base class of every error loramesh raises on purpose. The message is safe to show to callers. */
export abstract class LoraMeshError extends Error {
  abstract readonly kind: ErrorKind;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A request or file is malformed: a bad field, a shape mismatch, a truncated safetensors file. */
export class InvalidArgumentError extends LoraMeshError {
  readonly kind = "invalid-argument";
}

/** A named thing does not exist, or exists but belongs to another tenant (deliberately the same). */
export class NotFoundError extends LoraMeshError {
  readonly kind = "not-found";
}

/** Creating something whose name is taken. */
export class AlreadyExistsError extends LoraMeshError {
  readonly kind = "already-exists";
}

/** No or an unknown API key. */
export class UnauthenticatedError extends LoraMeshError {
  readonly kind = "unauthenticated";
}

/** The caller is known but may not do this. */
export class PermissionDeniedError extends LoraMeshError {
  readonly kind = "permission-denied";
}

/** A limit was hit: prompt too long, rank above the maximum, pool or queue full. */
export class ResourceExhaustedError extends LoraMeshError {
  readonly kind = "resource-exhausted";
  /** When a retry may succeed, in ms: a hint the transports pass on (gRPC metadata, HTTP Retry-After). */
  readonly retryAfterMs: number | undefined;

  constructor(message: string, options?: { cause?: unknown; retryAfterMs?: number }) {
    super(message, options);
    this.retryAfterMs = options?.retryAfterMs;
  }
}

/** The system is not in a state that allows this (for example an adapter that is still loading). */
export class FailedPreconditionError extends LoraMeshError {
  readonly kind = "failed-precondition";
}

/** A dependency (Redis, a peer service) cannot be reached; retrying later may work. */
export class UnavailableError extends LoraMeshError {
  readonly kind = "unavailable";
}

/** The caller's deadline passed before the work finished. */
export class DeadlineExceededError extends LoraMeshError {
  readonly kind = "deadline-exceeded";
}

/** The caller cancelled. */
export class CancelledError extends LoraMeshError {
  readonly kind = "cancelled";
}

/** The method exists in the protocol but this process does not serve it. */
export class UnimplementedError extends LoraMeshError {
  readonly kind = "unimplemented";
}

/**
 * A configuration value is missing or invalid. Thrown at start-up, before any server binds; the
 * message lists every problem found, one per line.
 */
export class ConfigError extends LoraMeshError {
  readonly kind = "invalid-argument";

  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n  ${problems.join("\n  ")}`);
  }
}

/** True for errors raised on purpose by loramesh code. */
export function isLoraMeshError(err: unknown): err is LoraMeshError {
  return err instanceof LoraMeshError;
}

/** The message of any thrown value, for logs. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.stack ?? `${err.name}: ${err.message}`;
  return String(err);
}

/** An adapter that cannot be served on this base model; the message names the field or file. */
export class AdapterError extends InvalidArgumentError {}
