import { Metadata, type CallOptions, type ServiceError } from "@grpc/grpc-js";
import { fromServiceError } from "@loramesh/core";

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (err: ServiceError | null, response: Res) => void,
) => unknown;

export interface UnaryOptions {
  /** Deadline in ms from now; default 10 s. */
  deadlineMs?: number;
  metadata?: Metadata;
  /** Queue the call until the peer is reachable (up to the deadline) instead of failing at once. */
  waitForReady?: boolean;
  /** Set when the failure is relayed to this process's own caller (see `fromServiceError`). */
  peer?: string;
}

/**
 * Calls a grpc-js unary method as a Promise, with a deadline. A failed call rejects with the
 * matching typed domain error (`fromServiceError`), the ServiceError as its cause.
 */
export function unary<Req, Res>(
  method: UnaryMethod<Req, Res>,
  self: object,
  request: Req,
  options: UnaryOptions = {},
): Promise<Res> {
  const metadata = options.metadata ?? new Metadata();
  if (options.waitForReady) metadata.setOptions({ waitForReady: true });
  const deadline = new Date(Date.now() + (options.deadlineMs ?? 10_000));
  const mapping = options.peer === undefined ? {} : { peer: options.peer };
  return new Promise((resolve, reject) => {
    method.call(self, request, metadata, { deadline }, (err, res) =>
      err ? reject(fromServiceError(err, mapping)) : resolve(res),
    );
  });
}
