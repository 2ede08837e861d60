/**
 * What the client has received of one generation, so that a worker lost mid-stream can be
 * replaced without the client noticing: the next worker prefills the prompt plus every token
 * already streamed and generates what is left of the budget. Greedy decoding continues exactly.
 * After a takeover the router decodes the text itself from all generated tokens (when the request
 * has no stop strings), so no character is lost or repeated at the seam. A request that resumes a
 * stream another router lost (`resumed`: the tokens its client already has) starts as a takeover.
 */
import { DEFAULT_MAX_TOKENS } from "@loramesh/core";
import type { WorkerOutcome, WorkerSequence } from "../peers/worker-gateway";
import type { Sampling, TokenDelta, Usage } from "./types";

export class Continuation {
  private readonly sent: number[] = [];
  private sentText = "";
  /** Tokens already streamed when the current worker took over (0 on the first worker). */
  private resumedAt = 0;
  private readonly budget: number;

  constructor(
    private readonly promptIds: readonly number[],
    private readonly sampling: Sampling,
    private readonly decode: (ids: number[]) => string,
    resumed: readonly number[] = [],
  ) {
    this.budget = sampling.maxTokens > 0 ? sampling.maxTokens : DEFAULT_MAX_TOKENS;
    if (resumed.length === 0) return;
    this.sent.push(...resumed);
    this.resumedAt = resumed.length;
    // What the client was sent: an incomplete last character was held back.
    const text = decode([...resumed]);
    this.sentText = text.endsWith("\uFFFD") ? text.slice(0, -1) : text;
  }

  get tokensSent(): number {
    return this.sent.length;
  }

  /** True when every token of the budget reached the client (the lost worker only failed to say so). */
  get exhausted(): boolean {
    return this.sent.length >= this.budget;
  }

  /** Prompt and sampling for the worker that runs the request now. */
  sequence(): Pick<WorkerSequence, "promptTokenIds" | "sampling"> {
    const n = this.sent.length;
    if (n === 0) return { promptTokenIds: [...this.promptIds], sampling: this.sampling };
    return {
      promptTokenIds: [...this.promptIds, ...this.sent],
      sampling: {
        ...this.sampling,
        maxTokens: this.budget - n,
        minTokens: Math.max(0, this.sampling.minTokens - n),
      },
    };
  }

  /** The next worker continues from what was sent. */
  takeover(): void {
    this.resumedAt = this.sent.length;
  }

  /** Passes a delta on to the client, counting what was sent. */
  forward(delta: TokenDelta, onDelta: (delta: TokenDelta) => void): void {
    this.sent.push(...delta.tokenIds);
    if (this.resumedAt === 0 || this.sampling.stop.length > 0) {
      this.sentText += delta.text;
      onDelta(delta);
      return;
    }
    // Decoded from every generated token: the seam between workers spells exactly like one stream.
    // A trailing split UTF-8 character waits for its next token (the final flush has no tokens).
    const full = this.decode(this.sent);
    const end = delta.tokenIds.length > 0 && full.endsWith("\uFFFD") ? full.length - 1 : full.length;
    const text = full.startsWith(this.sentText)
      ? full.slice(this.sentText.length, Math.max(end, this.sentText.length))
      : delta.text;
    this.sentText += text;
    onDelta({ ...delta, text });
  }

  /** The last worker's outcome with usage counted over the whole request. */
  outcome(last: WorkerOutcome): WorkerOutcome {
    return { ...last, usage: this.usage(last.usage) };
  }

  /** The budget ran out on the lost worker: the request is complete. */
  finishedByBudget(): WorkerOutcome {
    return {
      finishReason: "length",
      usage: { promptTokens: this.promptIds.length, completionTokens: this.sent.length },
      timings: undefined,
    };
  }

  private usage(u: Usage | undefined): Usage | undefined {
    if (!u || this.resumedAt === 0) return u;
    return { promptTokens: u.promptTokens - this.resumedAt, completionTokens: u.completionTokens + this.resumedAt };
  }
}
