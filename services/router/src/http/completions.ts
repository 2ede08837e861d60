/** POST /v1/completions: prompt as a string, strings, token ids or lists of token ids. */
import type { Prompt } from "../domain/types";
import { completionLogprobs } from "./logprobs";
import { badParam } from "./openai-errors";
import type { Body } from "./params";
import type { ResponseShape } from "./respond";
import type { Route } from "./context";
import { generationRoute } from "./generation-route";

const OWN = ["model", "prompt", "adapter_id"];

const isIds = (v: unknown): v is number[] =>
  Array.isArray(v) && v.length > 0 && v.every((id) => Number.isInteger(id) && (id as number) >= 0);

export function promptsOf(body: Body): Prompt[] {
  const p = body["prompt"];
  if (typeof p === "string") return [{ kind: "text", text: p }];
  if (isIds(p)) return [{ kind: "tokens", ids: p }];
  if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === "string"))
    return p.map((text) => ({ kind: "text", text }));
  if (Array.isArray(p) && p.length > 0 && p.every(isIds)) return p.map((ids) => ({ kind: "tokens", ids }));
  throw badParam("prompt", "prompt must be a string, a list of strings, a list of token ids, or a list of such lists");
}

function shape(
  id: string,
  created: number,
  model: string,
  tokenText: (id: number) => string,
  logprobs: boolean,
): ResponseShape {
  const head = { id, object: "text_completion", created, model };
  // Streamed text offsets continue from each choice's previous chunk.
  const offsets = new Map<number, number>();
  return {
    full: (results, usage) => ({
      ...head,
      choices: results.map((r) => ({
        index: r.index,
        text: r.text,
        logprobs: logprobs ? completionLogprobs(r.logprobs, tokenText) : null,
        finish_reason: r.finishReason,
      })),
      usage,
    }),
    opening: () => [],
    delta: (index, delta) => {
      let lps = null;
      if (logprobs) {
        lps = completionLogprobs(delta.logprobs ?? [], tokenText, offsets.get(index) ?? 0);
        offsets.set(index, (offsets.get(index) ?? 0) + lps.tokens.reduce((n, t) => n + t.length, 0));
      }
      return { ...head, choices: [{ index, text: delta.text, logprobs: lps, finish_reason: null }] };
    },
    finish: (r) => ({
      ...head,
      choices: [{ index: r.index, text: "", logprobs: null, finish_reason: r.finishReason }],
    }),
    usage: (usage) => ({ ...head, choices: [], usage }),
  };
}

export const completionsRoute: Route = generationRoute({
  url: "/v1/completions",
  own: OWN,
  idPrefix: "cmpl",
  chat: false,
  prompts: promptsOf,
  shape,
});
