/**
 * Errors inside a LoRA reply (`error`, `error_code`): one mapping each way. The server sends the
 * gRPC code of the domain error's kind; the worker turns a code back into a typed error. Only
 * NOT_FOUND keeps its class on the worker (it means "not resident here", which the remote backend
 * answers by waiting for the next placement); every other failure of a remote site is the LoRA
 * server being unable to serve it, so the step fails with UNAVAILABLE as it always has.
 */
import { status } from "@grpc/grpc-js";
import { grpcCodeOf } from "@loramesh/core";
import { isLoraMeshError, NotFoundError, UnavailableError, type LoraMeshError } from "@loramesh/errors";

export interface ReplyError {
  error: string;
  errorCode: number;
}

type ErrorClass = new (message: string) => LoraMeshError;

const WORKER_ERROR_OF_CODE: Partial<Record<status, ErrorClass>> = {
  [status.NOT_FOUND]: NotFoundError,
};

/** Server side: the reply fields for a failed work item. */
export function replyErrorOf(err: unknown): ReplyError {
  const message = err instanceof Error ? err.message : String(err);
  return { error: message, errorCode: isLoraMeshError(err) ? grpcCodeOf(err.kind) : status.INTERNAL };
}

/** Worker side: the typed error a failed reply raises. `serverId` names the peer in the message. */
export function errorOfReply(reply: ReplyError, serverId: string): LoraMeshError {
  const ErrorType = WORKER_ERROR_OF_CODE[reply.errorCode as status] ?? UnavailableError;
  return new ErrorType(`LoRA server ${serverId}: ${reply.error}`);
}
