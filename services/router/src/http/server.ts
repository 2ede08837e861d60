/**
 * The OpenAI-compatible HTTP API, served by fastify beside gRPC. Every route is a thin layer over the
 * same router domain the gRPC handlers call: bearer key → tenant, body → domain request, result →
 * OpenAI's shapes, any error → OpenAI's error body with its status.
 */
import { type Logger } from "@loramesh/core";
import Fastify, { type FastifyInstance } from "fastify";
import { randomUUID } from "node:crypto";
import type { Router } from "../domain/router";
import { bearerKey, type Tenants } from "../tenants";
import { chatRoute } from "./chat";
import { completionsRoute } from "./completions";
import type { HttpContext, Route } from "./context";
import { loadLoraRoute, unloadLoraRoute } from "./lora-admin";
import { getModelRoute, listModelsRoute } from "./models";
import { OpenAIError, toOpenAIError } from "./openai-errors";
import type { Body } from "./params";
import { respond } from "./respond";

declare module "fastify" {
  interface FastifyRequest {
    /** The caller's tenant, from its bearer key. */
    tenant: string;
  }
}

export interface HttpServerOptions {
  router: Router;
  tenants: Tenants;
  servedModelName: string;
  modelDir: string;
  logger: Logger;
}

const ROUTES: Route[] = [completionsRoute, chatRoute, listModelsRoute, getModelRoute, loadLoraRoute, unloadLoraRoute];

export function createHttpServer(options: HttpServerOptions): FastifyInstance {
  const { router, tenants, logger } = options;
  const logUnexpected = (err: unknown): void => logger.error("http request failed", { error: String(err) });
  const ctx: HttpContext = {
    router,
    servedModelName: options.servedModelName,
    modelDir: options.modelDir,
    respond: (reply, o) => respond(reply, { ...o, router, logUnexpected }),
    newId: () => randomUUID().replace(/-/g, ""),
    now: () => Math.floor(Date.now() / 1000),
  };
  const app = Fastify({ logger: false, bodyLimit: 16 * 1024 * 1024 });
  app.decorateRequest("tenant", "");
  app.addHook("onRequest", async (request) => {
    const auth = request.headers.authorization;
    request.tenant = tenants.resolveKey(bearerKey(auth));
  });
  app.setErrorHandler(async (err, _request, reply) => {
    const e = toOpenAIError(err, logUnexpected);
    if (e.status === 503) void reply.header("retry-after", "1");
    else if (e.retryAfterS !== undefined) void reply.header("retry-after", String(e.retryAfterS));
    return reply.status(e.status).send(e.body());
  });
  app.setNotFoundHandler(async (request, reply) =>
    reply
      .status(404)
      .send(new OpenAIError(404, `no route ${request.method} ${request.url}`, "invalid_request_error").body()),
  );
  for (const route of ROUTES)
    app.route({
      method: route.method,
      url: route.url,
      handler: async (request, reply) => {
        const body = (request.body ?? {}) as Body;
        if (route.method === "POST" && (typeof body !== "object" || Array.isArray(body)))
          throw new OpenAIError(400, "the request body must be a JSON object", "invalid_request_error");
        return route.handler(ctx, body, request, reply);
      },
    });
  return app;
}

/** Binds the server to HOST:PORT (port 0 picks a free one); resolves with the bound HOST:PORT. */
export async function listenHttp(app: FastifyInstance, address: string): Promise<string> {
  const colon = address.lastIndexOf(":");
  const host = address.slice(0, colon).replace(/^\[|\]$/g, "");
  await app.listen({ host, port: Number(address.slice(colon + 1)) });
  const bound = app.server.address();
  if (bound === null || typeof bound === "string") return address;
  return `${bound.family === "IPv6" ? `[${bound.address}]` : bound.address}:${bound.port}`;
}
