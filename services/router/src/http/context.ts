/** What every HTTP route gets: the router domain, the served model name, and how to answer. */
import type { FastifyReply, FastifyRequest } from "fastify";
import type { Router } from "../domain/router";
import type { Body } from "./params";
import type { RespondOptions } from "./respond";

export interface HttpContext {
  router: Router;
  /** The base model's name in `model` fields and in /v1/models. */
  servedModelName: string;
  /** The base model's directory (its `root` in /v1/models). */
  modelDir: string;
  respond(reply: FastifyReply, options: Omit<RespondOptions, "router" | "logUnexpected">): Promise<void>;
  newId(): string;
  /** Unix seconds, for `created` fields. */
  now(): number;
}

export interface Route {
  method: "GET" | "POST";
  url: string;
  handler(ctx: HttpContext, body: Body, request: FastifyRequest, reply: FastifyReply): Promise<unknown>;
}
