/**
 * Runs an OpenAI completion-style request and answers it: one JSON body, or server-sent events with
 * one chunk per delta, a finish chunk per choice, the usage chunk when asked, and `[DONE]`.
 * Completions and chat differ only in the shapes, given as a `ResponseShape`.
 */
import type { FastifyReply } from "fastify";
import type { Router } from "../domain/router";
import type { TokenDelta } from "../domain/types";
import { runChoices, totalUsage, type ChoiceJob, type ChoiceResult } from "./generation";
import { toOpenAIError } from "./openai-errors";
import { disconnectSignal, SseStream } from "./sse";

type OpenAIUsage = ReturnType<typeof totalUsage>;

export interface ResponseShape {
  /** The whole response of a non-streamed request. */
  full(results: ChoiceResult[], usage: OpenAIUsage): object;
  /** Chunks sent before any token (chat announces the assistant role). */
  opening(indices: number[]): object[];
  delta(index: number, delta: TokenDelta): object;
  finish(result: ChoiceResult): object;
  /** The chunk that carries usage alone. */
  usage(usage: OpenAIUsage): object;
}

export interface RespondOptions {
  router: Router;
  tenant: string;
  adapter: string;
  jobs: ChoiceJob[];
  stream: boolean;
  includeUsage: boolean;
  shape: ResponseShape;
  logUnexpected: (err: unknown) => void;
}

export async function respond(reply: FastifyReply, o: RespondOptions): Promise<void> {
  const signal = disconnectSignal(reply);
  const run = { tenant: o.tenant, adapter: o.adapter, signal };
  if (!o.stream) {
    const results = await runChoices(o.router, o.jobs, run);
    await reply.send(o.shape.full(results, totalUsage(o.jobs, results)));
    return;
  }
  // Headers wait for the first token, so a request refused at admission still gets its HTTP status.
  let sse: SseStream | undefined;
  // With include_usage every other chunk carries "usage": null, as OpenAI's do.
  const tag = (chunk: object): object => (o.includeUsage ? { ...chunk, usage: null } : chunk);
  const stream = (): SseStream => {
    if (sse) return sse;
    sse = new SseStream(reply);
    for (const chunk of o.shape.opening(o.jobs.map((j) => j.index))) sse.send(tag(chunk));
    return sse;
  };
  try {
    const results = await runChoices(o.router, o.jobs, {
      ...run,
      onDelta: (index, delta) => {
        // A token whose text is held back still brings its logprobs.
        if (delta.text !== "" || (delta.logprobs?.length ?? 0) > 0) stream().send(tag(o.shape.delta(index, delta)));
      },
      onFinish: (result) => stream().send(tag(o.shape.finish(result))),
    });
    if (o.includeUsage) stream().send(o.shape.usage(totalUsage(o.jobs, results)));
  } catch (err) {
    if (!sse) throw err;
    // Headers are gone: the error travels as an event, as vLLM sends it.
    if (!signal.aborted) sse.send(toOpenAIError(err, o.logUnexpected).body());
  }
  stream().done();
}
