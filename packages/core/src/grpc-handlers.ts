/**
 * Adapters from async functions to grpc-js handlers. Every loramesh handler goes through these:
 * each call runs inside a middleware chain (`grpc-middleware.ts`; deadlines and cancellation as an
 * AbortSignal, metrics, span attributes, optionally auth), and every thrown error is turned into a
 * status by the one mapper in `grpc-status.ts`.
 */
import type {
  handleBidiStreamingCall,
  handleServerStreamingCall,
  handleUnaryCall,
  ServerDuplexStream,
  ServerUnaryCall,
  ServerWritableStream,
} from "@grpc/grpc-js";
import {
  callContext,
  defaultMiddleware,
  runChain,
  type CallContext,
  type Middleware,
  type ServerCallLike,
} from "./grpc-middleware";
import { toGrpcStatus } from "./grpc-status";
import type { Logger } from "./logging";
import { assertDecoded } from "./undecodable-request";

/** Runs `body` for one call inside `chain`, releasing the call's deadline timer afterwards. */
function withChain(
  chain: readonly Middleware[],
  call: ServerCallLike,
  body: (ctx: CallContext) => Promise<void>,
): Promise<void> {
  const { ctx, release } = callContext(call);
  return runChain(chain, ctx, () => body(ctx)).finally(release);
}

/** A unary handler written as an async function; throw a domain error to fail the call. */
export function unaryHandler<Req, Res>(
  logger: Logger,
  fn: (request: Req, call: ServerUnaryCall<Req, Res>, ctx: CallContext) => Promise<Res>,
  chain: readonly Middleware[] = defaultMiddleware(),
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    let response: Res;
    withChain(chain, call, async (ctx) => {
      assertDecoded(call.request);
      response = await fn(call.request, call, ctx);
    }).then(
      () => callback(null, response),
      (err: unknown) => callback(toGrpcStatus(err, logger)),
    );
  };
}

/** A server-streaming handler: the function writes to `call` and resolves when the stream is done. */
export function serverStreamHandler<Req, Res>(
  logger: Logger,
  fn: (request: Req, call: ServerWritableStream<Req, Res>, ctx: CallContext) => Promise<void>,
  chain: readonly Middleware[] = defaultMiddleware(),
): handleServerStreamingCall<Req, Res> {
  return (call) => {
    withChain(chain, call, async (ctx) => {
      assertDecoded(call.request);
      await fn(call.request, call, ctx);
    }).then(
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
  fn: (call: ServerDuplexStream<Req, Res>, ctx: CallContext) => Promise<void>,
  chain: readonly Middleware[] = defaultMiddleware(),
): handleBidiStreamingCall<Req, Res> {
  return (call) => {
    withChain(chain, call, (ctx) => fn(call, ctx)).then(
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
