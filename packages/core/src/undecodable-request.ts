/**
 * Requests that do not decode (a uint64 above 2^53, a truncated field) reach the handler as an
 * `UndecodableRequest` instead of failing inside grpc-js, where the caller would see INTERNAL: the
 * handler wrappers turn it into INVALID_ARGUMENT like any other bad field. Only unary and
 * server-streaming methods are wrapped; a stream's messages are checked by their own handlers.
 */
import type { ServiceDefinition } from "@grpc/grpc-js";
import { InvalidArgumentError } from "@loramesh/errors";

/** Stands in for a request message the decoder refused. */
export class UndecodableRequest {
  constructor(readonly reason: string) {}
}

/** The definition with each single-request method's decoder made to return UndecodableRequest. */
export function tolerantDefinition(definition: ServiceDefinition): ServiceDefinition {
  const out: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(definition)) {
    if (method.requestStream) {
      out[name] = method;
      continue;
    }
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return method.requestDeserialize(bytes);
        } catch (err) {
          return new UndecodableRequest((err as Error).message);
        }
      },
    };
  }
  return out as ServiceDefinition;
}

/** Throws InvalidArgumentError when `request` did not decode. */
export function assertDecoded(request: unknown): void {
  if (request instanceof UndecodableRequest) {
    // The decoder's words ("Value is larger than Number.MAX_SAFE_INTEGER", "index out of range")
    // describe the problem, not the caller's bytes.
    throw new InvalidArgumentError(
      `the request does not decode: ${request.reason.slice(0, 200)} (integers must be below 2^53)`,
    );
  }
}
