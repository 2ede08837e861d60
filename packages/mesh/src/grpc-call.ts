import { Metadata, type CallOptions, type ServiceError } from "@grpc/grpc-js";

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (err: ServiceError | null, response: Res) => void,
) => unknown;

/** Calls a grpc-js unary method as a Promise, with a deadline. */
export function unary<Req, Res>(
  method: UnaryMethod<Req, Res>,
  self: object,
  request: Req,
  deadlineMs = 10_000,
  metadata = new Metadata(),
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method.call(self, request, metadata, { deadline: new Date(Date.now() + deadlineMs) }, (err, res) =>
      err ? reject(err) : resolve(res),
    );
  });
}
