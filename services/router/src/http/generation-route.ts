/**
 * The one handler behind /v1/completions and /v1/chat/completions: refuse unknown parameters,
 * resolve the model, turn the body into choice jobs, and answer in the endpoint's shape.
 */
import type { Prompt } from "../domain/types";
import type { HttpContext, Route } from "./context";
import { choiceJobs } from "./generation";
import { modelOf } from "./model-name";
import { bool, choicesOf, includeUsage, refuseUnsupported, samplingOf, type Body } from "./params";
import type { ResponseShape } from "./respond";

export interface GenerationEndpoint {
  url: string;
  /** Body fields the endpoint reads itself (besides the shared sampling parameters). */
  own: readonly string[];
  /** Response id prefix: `cmpl` or `chatcmpl`. */
  idPrefix: string;
  chat: boolean;
  prompts(body: Body): Prompt[];
  shape(
    id: string,
    created: number,
    model: string,
    tokenText: (id: number) => string,
    logprobs: boolean,
  ): ResponseShape;
}

export function generationRoute(endpoint: GenerationEndpoint): Route {
  return {
    method: "POST",
    url: endpoint.url,
    handler: async (ctx: HttpContext, body: Body, request, reply) => {
      refuseUnsupported(body, endpoint.own);
      const { adapter, model } = modelOf(body, ctx.servedModelName);
      const sampling = samplingOf(body, endpoint.chat);
      const jobs = choiceJobs(endpoint.prompts(body), choicesOf(body), sampling);
      await ctx.respond(reply, {
        tenant: request.tenant,
        adapter,
        jobs,
        stream: bool(body, "stream") ?? false,
        includeUsage: includeUsage(body),
        shape: endpoint.shape(
          `${endpoint.idPrefix}-${ctx.newId()}`,
          ctx.now(),
          model,
          (t) => ctx.router.tokenText(t),
          sampling.logprobs !== undefined,
        ),
      });
    },
  };
}
