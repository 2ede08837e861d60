/**
 * Server middleware, written once for every loramesh service: a chain of functions around each
 * handler call (Koa-style: each gets the call context and `next`). The handler wrappers in
 * `grpc-handlers.ts` run `defaultMiddleware()` unless a service passes its own chain, so every
 * service gets deadlines, cancellation, metrics and span attributes; error mapping stays in the
 * wrappers (the one mapper, `toGrpcStatus`), after the chain.
 */
import { status, type Metadata } from "@grpc/grpc-js";
import { metrics, trace, type Attributes, type Counter, type Histogram, type MeterProvider } from "@opentelemetry/api";
import { CancelledError, DeadlineExceededError, isLoraMeshError } from "@loramesh/errors";
import { grpcCodeOf } from "./grpc-status";

/** What middleware and handlers know about one call. */
export interface CallContext {
  /** Full method path, e.g. `/loramesh.v1.InferenceService/Generate`. */
  readonly method: string;
  readonly metadata: Metadata;
  /** Deadline in ms since the epoch; Infinity when the caller set none. */
  readonly deadline: number;
  /** Aborted when the caller cancels (reason CancelledError) or the deadline passes (DeadlineExceededError). */
  readonly signal: AbortSignal;
  /** Who the caller is, once an auth middleware resolved it (the router: the tenant). */
  principal: string | undefined;
  /** Span attributes collected during the call; the span middleware puts them on the active span. */
  readonly attributes: Attributes;
}

export type Middleware = (ctx: CallContext, next: () => Promise<void>) => Promise<void>;

/** Runs `handler` inside `chain` (first element outermost). */
export async function runChain(
  chain: readonly Middleware[],
  ctx: CallContext,
  handler: () => Promise<void>,
): Promise<void> {
  const step = (i: number): Promise<void> => {
    const mw = chain[i];
    return mw ? mw(ctx, () => step(i + 1)) : handler();
  };
  await step(0);
}

/** The parts of a grpc-js server call the context is built from. */
export interface ServerCallLike {
  getPath(): string;
  getDeadline(): Date | number;
  readonly metadata: Metadata;
  readonly cancelled: boolean;
  on(event: "cancelled", listener: () => void): unknown;
  removeListener(event: "cancelled", listener: () => void): unknown;
}

/**
 * A context whose signal aborts on cancellation or at the deadline. `release` detaches the
 * listener and the timer once the call is over.
 */
export function callContext(call: ServerCallLike): { ctx: CallContext; release: () => void } {
  const raw = call.getDeadline();
  const deadline = raw instanceof Date ? raw.getTime() : raw;
  const controller = new AbortController();
  // The caller's clock starts before ours (the request's transit): a caller whose deadline passed
  // cancels the stream before our copy of the deadline does. A cancel in the last quarter of the
  // budget (at most 1 s) is taken as that deadline, not as a cancellation by the caller.
  const slackMs = Number.isFinite(deadline) ? Math.min(1_000, Math.max(0, deadline - Date.now()) / 4) : 0;
  const onCancelled = (): void => {
    if (controller.signal.aborted) return;
    const late = Date.now() >= deadline - slackMs;
    controller.abort(
      late ? new DeadlineExceededError("the deadline passed") : new CancelledError("the caller cancelled"),
    );
  };
  call.on("cancelled", onCancelled);
  let timer: NodeJS.Timeout | undefined;
  if (Number.isFinite(deadline)) {
    // grpc-js ends the call at the deadline; this makes sure the handler hears about it too.
    timer = setTimeout(onCancelled, Math.max(0, deadline - Date.now()));
    timer.unref();
  }
  if (call.cancelled) onCancelled();
  const ctx: CallContext = {
    method: call.getPath(),
    metadata: call.metadata,
    deadline,
    signal: controller.signal,
    principal: undefined,
    attributes: {},
  };
  const release = (): void => {
    if (timer) clearTimeout(timer);
    call.removeListener("cancelled", onCancelled);
  };
  return { ctx, release };
}

/** The status code a call ends with when the chain threw `err` (as `toGrpcStatus` maps it). */
export function statusCodeOf(err: unknown): status {
  return isLoraMeshError(err) ? grpcCodeOf(err.kind) : status.INTERNAL;
}

interface RpcInstruments {
  calls: Counter;
  duration: Histogram;
}
let instruments: { provider: MeterProvider; value: RpcInstruments } | undefined;

// Instruments from the current global provider (telemetry may start after this module loads).
function rpcInstruments(): RpcInstruments {
  const provider = metrics.getMeterProvider();
  if (instruments?.provider !== provider) {
    const meter = provider.getMeter("loramesh");
    instruments = {
      provider,
      value: {
        calls: meter.createCounter("loramesh_rpc_server_calls_total", {
          description: "gRPC calls handled, by method and status code",
        }),
        duration: meter.createHistogram("loramesh_rpc_server_duration_seconds", {
          description: "gRPC handler time, by method and status code",
          unit: "s",
        }),
      },
    };
  }
  return instruments.value;
}

/** Counts calls by method and status code and records handler latency. */
export function metricsMiddleware(): Middleware {
  return async (ctx, next) => {
    const started = performance.now();
    let code: status = status.OK;
    try {
      await next();
      if (ctx.signal.aborted) code = statusCodeOf(ctx.signal.reason);
    } catch (err) {
      code = statusCodeOf(err);
      throw err;
    } finally {
      const { calls, duration } = rpcInstruments();
      const attributes = { method: ctx.method, code: status[code] ?? String(code) };
      calls.add(1, attributes);
      duration.record((performance.now() - started) / 1000, attributes);
    }
  };
}

/** Puts the call's attributes (and the error class of a failed call) on the active span. */
export function spanAttributesMiddleware(): Middleware {
  return async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      ctx.attributes["loramesh.error.class"] = isLoraMeshError(err) ? err.name : "internal";
      throw err;
    } finally {
      trace.getActiveSpan()?.setAttributes(ctx.attributes);
    }
  };
}

/**
 * Resolves the caller from the call metadata before the handler runs; `resolve` throws (e.g.
 * UnauthenticatedError) to refuse the call. The result is `ctx.principal`.
 */
export function authMiddleware(
  resolve: (metadata: Metadata) => string | Promise<string>,
  attribute = "loramesh.principal",
): Middleware {
  return async (ctx, next) => {
    ctx.principal = await resolve(ctx.metadata);
    ctx.attributes[attribute] = ctx.principal;
    await next();
  };
}

/** The chain every handler gets unless its service passes another: metrics, then span attributes. */
export function defaultMiddleware(): Middleware[] {
  return [metricsMiddleware(), spanAttributesMiddleware()];
}
