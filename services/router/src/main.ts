#!/usr/bin/env node
/** Process entry of the router: the public gRPC API. */
import "./otel";
import { runServiceProcess } from "@loramesh/core";
import { options } from "./options";
import { createRouterServices } from "./router-service";
import { Tenants } from "./tenants";

void runServiceProcess({
  name: "router",
  summary:
    "public gRPC API and OpenAI-compatible HTTP API: tenants, admission, routing to base workers, token streaming",
  options,
  create: async (config, logger) =>
    createRouterServices({
      provisionerAddress: config.provisioner,
      modelDir: config.model,
      tenants: Tenants.parse(config.apiKeys),
      adapterWaitMs: config.adapterWaitMs,
      routingSlack: config.routingSlack,
      maxInFlight: config.maxInFlight,
      limits: {
        tenantMaxInFlight: config.tenantMaxInFlight,
        maxQueued: config.maxQueued,
        sloFactor: config.admissionSloFactor,
      },
      slo: { ttftMs: config.sloTtftMs, tpotMs: config.sloTpotMs },
      httpListen: config.httpListen,
      servedModelName: config.servedModelName,
      logger,
    }),
});
