/**
 * OpenTelemetry for loramesh services: traces through the standard OTEL_* environment variables
 * (OTLP over gRPC or HTTP; off unless an OTLP endpoint or OTEL_TRACES_EXPORTER is set), gRPC and
 * ioredis instrumentation, and metrics served in Prometheus format.
 *
 * Call `startTelemetry` before anything loads @grpc/grpc-js or ioredis (each service's `otel.ts` is
 * its first import), so the instrumentations can patch them.
 */
import { createServer, type Server } from "node:http";
import { context, metrics, propagation, trace, type Context, type Meter, type Tracer } from "@opentelemetry/api";
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import { GrpcInstrumentation } from "@opentelemetry/instrumentation-grpc";
import { IORedisInstrumentation } from "@opentelemetry/instrumentation-ioredis";
import { NodeSDK, resources } from "@opentelemetry/sdk-node";

/**
 * The process as a resource without its command line: flags may carry secrets (a Redis URL with a
 * password, `--api-keys`), and resource attributes appear in /metrics (target_info) and on spans.
 */
const processWithoutArgs: resources.ResourceDetector = {
  detect: () => ({
    attributes: {
      "process.pid": process.pid,
      "process.runtime.name": "nodejs",
      "process.runtime.version": process.versions.node,
    },
  }),
};

export interface Telemetry {
  readonly serviceName: string;
  readonly tracer: Tracer;
  readonly meter: Meter;
  /** True when spans are exported somewhere. */
  readonly tracingEnabled: boolean;
  /** Renders all metrics in the Prometheus text format. */
  readonly prometheus: PrometheusExporter;
  shutdown(): Promise<void>;
}

let current: Telemetry | undefined;

function tracingConfigured(env: NodeJS.ProcessEnv): boolean {
  const exporter = (env["OTEL_TRACES_EXPORTER"] ?? "").trim();
  if (exporter === "none") return false;
  if (exporter !== "") return true;
  return Boolean(env["OTEL_EXPORTER_OTLP_ENDPOINT"] || env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]);
}

/** Starts the SDK once per process; later calls return the same telemetry. */
export function startTelemetry(serviceName: string): Telemetry {
  if (current) return current;
  // Configured through arguments, never by editing process.env: child processes inherit it.
  const name = process.env["OTEL_SERVICE_NAME"] ?? serviceName;
  const tracingEnabled = tracingConfigured(process.env);
  const prometheus = new PrometheusExporter({ preventServerStart: true });
  const sdk = new NodeSDK({
    serviceName: name,
    // Never the default process detector (command line) nor OTEL_NODE_RESOURCE_DETECTORS' choice.
    resourceDetectors: [resources.envDetector, resources.hostDetector, processWithoutArgs],
    // Metrics go to Prometheus (below); logs are JSON lines on stderr, not OTLP.
    logRecordProcessors: [],
    // Without a configured destination there is nothing to export to: no span processors (rather
    // than the SDK's default exporter to localhost, which would log connection errors).
    ...(tracingEnabled ? {} : { spanProcessors: [] }),
    metricReader: prometheus,
    instrumentations: [
      new GrpcInstrumentation({
        // The OTLP exporter's own calls are not part of any request.
        ignoreGrpcMethods: [/^Export$/],
      }),
      new IORedisInstrumentation({ requireParentSpan: true }),
    ],
  });
  sdk.start();
  current = {
    serviceName: name,
    tracer: trace.getTracer("loramesh"),
    meter: metrics.getMeter("loramesh"),
    tracingEnabled,
    prometheus,
    shutdown: () => sdk.shutdown(),
  };
  return current;
}

/** The process's telemetry (started with a generic name if no service started it). */
export function telemetry(): Telemetry {
  return current ?? startTelemetry("loramesh");
}

/** Serves GET /metrics in Prometheus format on `host:port` (port 0: any free port). */
export async function serveMetrics(address: string): Promise<{ address: string; close(): Promise<void> }> {
  const exporter = telemetry().prometheus;
  const server: Server = createServer((req, res) => {
    if (req.url === "/metrics" || req.url?.startsWith("/metrics?")) exporter.getMetricsRequestHandler(req, res);
    else {
      res.statusCode = 404;
      res.end("not found; metrics are at /metrics\n");
    }
  });
  const colon = address.lastIndexOf(":");
  const host = address.slice(0, colon),
    port = Number(address.slice(colon + 1));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host.replace(/^\[|\]$/g, ""), () => resolve());
  });
  const bound = server.address();
  const boundPort = typeof bound === "object" && bound ? bound.port : port;
  return {
    address: `${host}:${boundPort}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** W3C trace-context carrier for a context (to put into messages and job data). */
export function injectContext(ctx: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier;
}

/** The context a carrier describes (root context when it is empty). */
export function extractContext(carrier: Record<string, string> | undefined): Context {
  return carrier && Object.keys(carrier).length > 0 ? propagation.extract(context.active(), carrier) : context.active();
}

export {
  context,
  trace,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  type Context,
  type Span,
  type Attributes,
} from "@opentelemetry/api";
