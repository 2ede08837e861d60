/** gRPC failures of the router's peers, re-raised as domain errors with the same code and message. */
import { status, type ServiceError } from "@grpc/grpc-js";
import { LoraMeshError, type ErrorKind } from "@loramesh/core";

/** A gRPC failure from a peer, re-raised with the same code and message. */
export class PeerError extends LoraMeshError {
  constructor(
    readonly kind: ErrorKind,
    message: string,
  ) {
    super(message);
  }
}

const KIND_OF_CODE: Partial<Record<status, ErrorKind>> = {
  [status.INVALID_ARGUMENT]: "invalid-argument",
  [status.NOT_FOUND]: "not-found",
  [status.ALREADY_EXISTS]: "already-exists",
  [status.RESOURCE_EXHAUSTED]: "resource-exhausted",
  [status.FAILED_PRECONDITION]: "failed-precondition",
  [status.UNAVAILABLE]: "unavailable",
  [status.DEADLINE_EXCEEDED]: "deadline-exceeded",
  [status.CANCELLED]: "cancelled",
  [status.UNIMPLEMENTED]: "unimplemented",
};

export function fromPeer(err: unknown, peer: string): Error {
  const e = err as Partial<ServiceError>;
  if (typeof e.code === "number")
    return new PeerError(
      KIND_OF_CODE[e.code] ?? "unavailable",
      e.code === status.INTERNAL ? `${peer} failed` : (e.details ?? `${peer} failed`),
    );
  return err instanceof Error ? err : new Error(String(err));
}
