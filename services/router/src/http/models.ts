/** GET /v1/models and /v1/models/{id}: the base model and the caller's tenant's adapters. */
import type { AdapterRecord } from "../domain/types";
import type { HttpContext, Route } from "./context";
import { OpenAIError } from "./openai-errors";

function baseModel(ctx: HttpContext): object {
  return {
    id: ctx.servedModelName,
    object: "model",
    created: 0,
    owned_by: "loramesh",
    root: ctx.modelDir,
    parent: null,
  };
}

function adapterModel(ctx: HttpContext, a: AdapterRecord): object {
  return {
    id: a.name,
    object: "model",
    created: Math.floor(a.createdUnixMs / 1000),
    owned_by: a.tenant,
    root: a.localDir ?? a.uri ?? a.name,
    parent: ctx.servedModelName,
  };
}

export const listModelsRoute: Route = {
  method: "GET",
  url: "/v1/models",
  handler: async (ctx, _body, request) => {
    const adapters = await ctx.router.allAdapters(request.tenant);
    return { object: "list", data: [baseModel(ctx), ...adapters.map((a) => adapterModel(ctx, a))] };
  },
};

export const getModelRoute: Route = {
  method: "GET",
  url: "/v1/models/:id",
  handler: async (ctx, _body, request) => {
    const id = (request.params as { id: string }).id;
    if (id === ctx.servedModelName) return baseModel(ctx);
    try {
      return adapterModel(ctx, await ctx.router.getAdapter(request.tenant, id));
    } catch (err) {
      if ((err as { kind?: unknown }).kind === "not-found")
        throw new OpenAIError(
          404,
          `the model ${id} does not exist`,
          "invalid_request_error",
          "model",
          "model_not_found",
        );
      throw err;
    }
  },
};
