/**
 * Server-sent events on fastify's raw reply. Framing is the one line OpenAI streams use,
 * `data: <json>\n\n`, ending with `data: [DONE]`; no SSE helper for fastify supports Node 20.19.
 */
import type { FastifyReply } from "fastify";

export class SseStream {
  private ended = false;

  constructor(private readonly reply: FastifyReply) {
    reply.hijack();
    reply.raw.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
    });
  }

  send(data: unknown): void {
    if (!this.ended && !this.reply.raw.destroyed) this.reply.raw.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  done(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.reply.raw.destroyed) return;
    this.reply.raw.write("data: [DONE]\n\n");
    this.reply.raw.end();
  }
}

/** An AbortSignal that fires when the client goes away before the response finished. */
export function disconnectSignal(reply: FastifyReply): AbortSignal {
  const aborter = new AbortController();
  reply.raw.once("close", () => {
    if (!reply.raw.writableFinished) aborter.abort();
  });
  return aborter.signal;
}
