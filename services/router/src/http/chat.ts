/** POST /v1/chat/completions: messages through the model's chat template (400 when it has none). */
import type { ChatMessage, TokenLogprob } from "../domain/types";
import { chatLogprobs } from "./logprobs";
import { badParam } from "./openai-errors";
import type { Body } from "./params";
import type { ResponseShape } from "./respond";
import type { Route } from "./context";
import { generationRoute } from "./generation-route";

const OWN = ["model", "messages", "adapter_id"];

/** Message content as text: a string, or text parts (other part types are refused). */
function contentOf(content: unknown, i: number): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content))
    return content
      .map((part: unknown) => {
        const p = part as { type?: unknown; text?: unknown };
        if (p.type !== "text" || typeof p.text !== "string")
          throw badParam(`messages[${i}].content`, "only text content parts are supported");
        return p.text;
      })
      .join("");
  throw badParam(`messages[${i}].content`, "content must be a string or a list of text parts");
}

export function messagesOf(body: Body): ChatMessage[] {
  const m = body["messages"];
  if (!Array.isArray(m) || m.length === 0) throw badParam("messages", "messages must be a non-empty list");
  return m.map((msg: unknown, i) => {
    const { role, content } = (msg ?? {}) as { role?: unknown; content?: unknown };
    if (typeof role !== "string" || role === "") throw badParam(`messages[${i}].role`, "role must be a string");
    return { role, content: contentOf(content, i) };
  });
}

function shape(
  id: string,
  created: number,
  model: string,
  tokenText: (id: number) => string,
  logprobs: boolean,
): ResponseShape {
  const head = { id, object: "chat.completion.chunk", created, model };
  const lps = (l: TokenLogprob[] | undefined): object | null =>
    logprobs ? { content: chatLogprobs(l ?? [], tokenText) } : null;
  const chunk = (index: number, delta: object, finish: string | null, l?: TokenLogprob[]): object => ({
    ...head,
    choices: [{ index, delta, logprobs: l ? lps(l) : null, finish_reason: finish }],
  });
  return {
    full: (results, usage) => ({
      ...head,
      object: "chat.completion",
      choices: results.map((r) => ({
        index: r.index,
        message: { role: "assistant", content: r.text },
        logprobs: lps(r.logprobs),
        finish_reason: r.finishReason,
      })),
      usage,
    }),
    opening: (indices) => indices.map((index) => chunk(index, { role: "assistant", content: "" }, null)),
    delta: (index, delta) => chunk(index, { content: delta.text }, null, delta.logprobs ?? []),
    finish: (r) => chunk(r.index, {}, r.finishReason),
    usage: (usage) => ({ ...head, choices: [], usage }),
  };
}

export const chatRoute: Route = generationRoute({
  url: "/v1/chat/completions",
  own: OWN,
  idPrefix: "chatcmpl",
  chat: true,
  prompts: (body) => [{ kind: "chat", messages: messagesOf(body) }],
  shape,
});
