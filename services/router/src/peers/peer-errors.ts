/** gRPC failures of the router's peers, re-raised as domain errors through core's one client-side mapper. */
import { status, type ServiceError } from "@grpc/grpc-js";
import { fromServiceError } from "@loramesh/core";
import { CancelledError } from "@loramesh/errors";

export function fromPeer(err: unknown, peer: string): Error {
  if ((err as Partial<ServiceError>).code === status.CANCELLED) return new CancelledError("cancelled", { cause: err });
  return fromServiceError(err, { peer });
}
