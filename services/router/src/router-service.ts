/**
 * The router process's wiring: peers (provisioner, placement, workers), the router domain, and the
 * thin gRPC handlers over it. The router authenticates the tenant, resolves the adapter within that
 * tenant (another tenant's adapter looks exactly like a missing one), tokenizes, picks a base worker
 * that can serve the adapter, and streams tokens back, passing deadline and cancellation on.
 */
import { basename, resolve } from "node:path";
import { type Logger, type ServiceInstance } from "@loramesh/core";
import { AdapterServiceService, InferenceServiceService, SERVICE_NAMES } from "@loramesh/proto";
import { PromptEncoder } from "./domain/prompt-encoder";
import { Router } from "./domain/router";
import { createHttpServer, listenHttp } from "./http/server";
import { adapterHandlers } from "./grpc/adapter-handlers";
import { inferenceHandlers } from "./grpc/inference-handlers";
import { PlacementView } from "./peers/placement-view";
import { ProvisionerGateway } from "./peers/provisioner-gateway";
import { WorkerGateway } from "./peers/worker-gateway";
import type { AdmissionLimits } from "./domain/admission-gate";
import { RouterMetrics, type SloTargets } from "./router-metrics";
import type { Tenants } from "./tenants";

export interface RouterServiceOptions {
  provisionerAddress: string;
  modelDir: string;
  tenants: Tenants;
  /** How long a request waits for a cold adapter to become resident. */
  adapterWaitMs: number;
  /** Extra in-flight requests a worker may have and still be preferred for rank grouping. */
  routingSlack?: number;
  /** Most requests in flight on the router; 0 = no limit. */
  maxInFlight?: number;
  /** The other admission limits (per tenant, the queue, SLO-based refusal). */
  limits?: Partial<AdmissionLimits>;
  /** Latency targets counted by the SLO-attainment metric. */
  slo: SloTargets;
  /** Where the OpenAI-compatible HTTP API listens (HOST:PORT, port 0 = any free port). */
  httpListen: string;
  /** The base model's name in the HTTP API; default the model directory's name. */
  servedModelName?: string;
  logger: Logger;
}

/** Told to the parent process (`loramesh up`) once the HTTP API is bound. */
export interface HttpListeningMessage {
  type: "http-listening";
  service: "router";
  address: string;
}

/** The router domain with its peers, and how to close them. */
export function createRouter(options: RouterServiceOptions): { router: Router; close: () => void } {
  const provisioner = new ProvisionerGateway(options.provisionerAddress);
  const placement = new PlacementView(options.provisionerAddress, options.logger);
  const workers = new WorkerGateway();
  const metrics = new RouterMetrics(options.slo);
  const router = new Router({
    provisioner,
    placement,
    workers,
    prompts: new PromptEncoder(options.modelDir),
    metrics,
    admissionEvents: metrics,
    adapterWaitMs: options.adapterWaitMs,
    ...(options.routingSlack !== undefined ? { routingSlack: options.routingSlack } : {}),
    ...(options.maxInFlight !== undefined ? { maxInFlight: options.maxInFlight } : {}),
    ...(options.limits !== undefined ? { limits: options.limits } : {}),
    logger: options.logger,
  });
  const close = (): void => {
    placement.close();
    provisioner.close();
    workers.close();
  };
  return { router, close };
}

export async function createRouterServices(options: RouterServiceOptions): Promise<ServiceInstance> {
  const { logger, tenants } = options;
  const { router, close } = createRouter(options);
  if (tenants.open) logger.info("no API keys configured: every call uses the default tenant");
  const http = createHttpServer({
    router,
    tenants,
    servedModelName: options.servedModelName || basename(resolve(options.modelDir)),
    modelDir: options.modelDir,
    logger,
  });
  try {
    const address = await listenHttp(http, options.httpListen);
    logger.info("openai http api serving", { address: `http://${address}/v1` });
    process.send?.({ type: "http-listening", service: "router", address } satisfies HttpListeningMessage);
  } catch (err) {
    close();
    throw err;
  }
  return {
    services: [
      {
        name: SERVICE_NAMES.router[0],
        definition: InferenceServiceService,
        implementation: inferenceHandlers(router, tenants, logger),
      },
      {
        name: SERVICE_NAMES.router[1],
        definition: AdapterServiceService,
        implementation: adapterHandlers(router, tenants, logger),
      },
    ],
    close: async () => {
      await http.close();
      close();
    },
  };
}
