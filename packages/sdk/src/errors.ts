import { status, type ServiceError } from "@grpc/grpc-js";

/** Metadata key the servers set to the domain error class (see @loramesh/core grpc-status). */
const ERROR_CLASS_METADATA_KEY = "loramesh-error-class";
/** Metadata key of a refusal's retry hint in milliseconds (the router's admission control). */
const RETRY_AFTER_METADATA_KEY = "retry-after-ms";

/**
 * A failed call, as the SDK reports it: the gRPC status code, the server's message, and the name of
 * the server-side error class when the server sent one (e.g. `NotFoundError`).
 */
export class LoraMeshClientError extends Error {
  constructor(
    readonly code: status,
    readonly details: string,
    readonly errorClass: string | undefined,
    options?: { cause?: unknown; retryAfterMs?: number },
  ) {
    super(`${status[code] ?? code}: ${details}`, options);
    this.name = "LoraMeshClientError";
    this.retryAfterMs = options?.retryAfterMs;
  }

  /** The server's hint of when a retry may succeed (RESOURCE_EXHAUSTED from admission), in ms. */
  readonly retryAfterMs: number | undefined;

  /** Calls that may succeed when retried unchanged. */
  get retryable(): boolean {
    return this.code === status.UNAVAILABLE || this.code === status.RESOURCE_EXHAUSTED;
  }
}

/** Turns whatever grpc-js raised into a LoraMeshClientError (other errors pass through). */
export function toClientError(err: unknown): Error {
  if (!isServiceError(err)) return err instanceof Error ? err : new Error(String(err));
  const errorClass = err.metadata?.get(ERROR_CLASS_METADATA_KEY)[0];
  const retryAfter = Number(err.metadata?.get(RETRY_AFTER_METADATA_KEY)[0]);
  return new LoraMeshClientError(err.code, err.details, typeof errorClass === "string" ? errorClass : undefined, {
    cause: err,
    ...(Number.isFinite(retryAfter) && retryAfter > 0 ? { retryAfterMs: retryAfter } : {}),
  });
}

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === "number" && "details" in err;
}
