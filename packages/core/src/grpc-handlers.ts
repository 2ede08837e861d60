/**
 * Adapters from async functions to grpc-js handlers. Every loramesh handler goes through these, so
 * every thrown error is turned into a status by the one mapper in `grpc-status.ts`.
 */
import type {
  handleBidiStreamingCall,
  handleServerStreamingCall,
  handleUnaryCall,
  ServerDuplexStream,
  ServerUnaryCall,
  ServerWritableStream,
} from "@grpc/grpc-js";
import { toGrpcStatus } from "./grpc-status";
import type { Logger } from "./logging";

/** A unary handler written as an async function; throw a domain error to fail the call. */
export function unaryHandler<Req, Res>(
  logger: Logger,
  fn: (request: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call.request, call).then(
      (response) => callback(null, response),
      (err: unknown) => callback(toGrpcStatus(err, logger)),
    );
  };
}

/** A server-streaming handler: the function writes to `call` and resolves when the stream is done. */
export function serverStreamHandler<Req, Res>(
  logger: Logger,
  fn: (request: Req, call: ServerWritableStream<Req, Res>) => Promise<void>,
): handleServerStreamingCall<Req, Res> {
  return (call) => {
    fn(call.request, call).then(
      () => {
        if (!call.writableEnded) call.end();
      },
      (err: unknown) => {
        if (!call.writableEnded) call.emit("error", toGrpcStatus(err, logger));
      },
    );
  };
}

/**
 * A bidirectional-streaming handler with the same error contract. A peer that goes away mid-stream
 * (cancel, disconnect) is normal, not an error.
 */
export function bidiStreamHandler<Req, Res>(
  logger: Logger,
  fn: (call: ServerDuplexStream<Req, Res>) => Promise<void>,
): handleBidiStreamingCall<Req, Res> {
  return (call) => {
    fn(call).then(
      () => {
        if (!call.writableEnded) call.end();
      },
      (err: unknown) => {
        const closed = call.cancelled || (err as { code?: unknown }).code === "ERR_STREAM_PREMATURE_CLOSE";
        if (closed) return;
        if (!call.writableEnded) call.emit("error", toGrpcStatus(err, logger));
      },
    );
  };
}
