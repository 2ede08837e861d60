/**
 * The Execute handler: one wire session per worker stream over the site executor. A traced step's
 * site runs inside the worker's trace (its context travels in the work message).
 */
import type { ServerDuplexStream } from "@grpc/grpc-js";
import type { Logger } from "@loramesh/core";
import { serveLoraStream, type ReceivedWork, type SiteExecutor } from "@loramesh/lora-wire";
import type { LoraResult, LoraStreamRequest } from "@loramesh/proto";
import { extractContext, SpanKind, SpanStatusCode, telemetry } from "@loramesh/telemetry";
import type { SiteBatcher } from "./site-batcher";

export interface LoraStreamHandlerOptions {
  executor: SiteExecutor;
  batcher: SiteBatcher;
  logger: Logger;
}

export class LoraStreamHandler {
  private nextStream = 0;
  /** Worker streams open now. */
  openStreams = 0;
  private readonly executor: SiteExecutor;

  constructor(private readonly options: LoraStreamHandlerOptions) {
    const inner = options.executor;
    this.executor = {
      hInOf: (site) => inner.hInOf(site),
      execute: (work, id) => traced(work, () => inner.execute(work, id)),
    };
  }

  async serve(call: ServerDuplexStream<LoraStreamRequest, LoraResult>): Promise<void> {
    this.openStreams++;
    const streamId = ++this.nextStream;
    try {
      await serveLoraStream(call, {
        streamId,
        executor: this.executor,
        logger: this.options.logger,
      });
    } finally {
      this.openStreams--;
      this.options.batcher.closeStream(streamId);
    }
  }
}

function traced<T>(work: ReceivedWork, run: () => Promise<T>): Promise<T> {
  if (!telemetry().tracingEnabled || work.traceparent === "") return run();
  const parent = extractContext({
    traceparent: work.traceparent,
    ...(work.tracestate ? { tracestate: work.tracestate } : {}),
  });
  const attributes = {
    "loramesh.layer": work.layer,
    "loramesh.site": `LORA_SITE_${work.site.toUpperCase()}`,
    "loramesh.adapters": work.adapterIds.join(","),
    "loramesh.transport": work.transport,
  };
  return telemetry().tracer.startActiveSpan(
    "lora.site.execute",
    { kind: SpanKind.SERVER, attributes },
    parent,
    async (span) => {
      try {
        const result = await run();
        span.setAttribute("loramesh.rows", work.rows);
        return result;
      } catch (err) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
        throw err;
      } finally {
        span.end();
      }
    },
  );
}
