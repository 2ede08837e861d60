/**
 * Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the HTTP status a
 * client of the OpenAI API expects. Domain errors map by kind; anything unexpected is a 500 whose
 * details go only to the log.
 */
import { isLoraMeshError, ResourceExhaustedError, type ErrorKind } from "@loramesh/errors";

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** An error the HTTP layer raises itself, already in OpenAI's terms. */
export class OpenAIError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Seconds for the Retry-After header of a 429 or 503. */
    readonly retryAfterS?: number,
  ) {
    super(message);
  }

  body(): OpenAIErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** A 400 for a bad or unsupported request parameter, naming it. */
export const badParam = (param: string, message: string, code: string | null = null): OpenAIError =>
  new OpenAIError(400, message, "invalid_request_error", param, code);

const BY_KIND: Record<ErrorKind, [number, string, string | null]> = {
  "invalid-argument": [400, "invalid_request_error", null],
  "not-found": [404, "invalid_request_error", "model_not_found"],
  "already-exists": [400, "invalid_request_error", "already_exists"],
  unauthenticated: [401, "authentication_error", "invalid_api_key"],
  "permission-denied": [403, "permission_error", null],
  "resource-exhausted": [429, "rate_limit_error", "rate_limit_exceeded"],
  // The adapter is not resident anywhere yet: no worker can serve it now.
  "failed-precondition": [503, "service_unavailable_error", "adapter_not_ready"],
  unavailable: [503, "service_unavailable_error", null],
  "deadline-exceeded": [504, "timeout_error", null],
  cancelled: [499, "cancelled", null],
  unimplemented: [501, "invalid_request_error", null],
  internal: [500, "internal_error", null],
};

/** The engine's refusal of a prompt longer than the context (its message is part of its contract). */
const CONTEXT_EXCEEDED = /exceeds the maximum sequence length/;

/** Maps any thrown value to an OpenAIError; `unexpected` gets what should be logged. */
export function toOpenAIError(err: unknown, unexpected: (err: unknown) => void): OpenAIError {
  if (err instanceof OpenAIError) return err;
  if (isLoraMeshError(err)) {
    if (err.kind === "invalid-argument" && CONTEXT_EXCEEDED.test(err.message))
      return new OpenAIError(413, err.message, "invalid_request_error", "prompt", "context_length_exceeded");
    const [status, type, code] = BY_KIND[err.kind];
    const retryAfterS =
      err instanceof ResourceExhaustedError && err.retryAfterMs !== undefined
        ? Math.max(1, Math.ceil(err.retryAfterMs / 1000))
        : undefined;
    return new OpenAIError(status, err.message, type, null, code, retryAfterS);
  }
  // fastify's own client errors (malformed JSON, body too large, wrong content type).
  const fst = err as { statusCode?: unknown; message?: unknown };
  if (typeof fst.statusCode === "number" && fst.statusCode >= 400 && fst.statusCode < 500)
    return new OpenAIError(fst.statusCode, String(fst.message), "invalid_request_error");
  unexpected(err);
  return new OpenAIError(500, "internal error", "internal_error");
}
