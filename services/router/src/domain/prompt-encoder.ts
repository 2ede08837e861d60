/** Turns a request's prompt into token ids with the base model's tokenizer and chat template. */
import { FailedPreconditionError, InvalidArgumentError } from "@loramesh/errors";
import { Tokenizer } from "@loramesh/formats";
import type { ChatMessage, Prompt } from "./types";

export class PromptEncoder {
  private readonly tokenizer: Tokenizer;

  constructor(modelDir: string) {
    this.tokenizer = Tokenizer.load(modelDir);
  }

  /** Token ids of the prompt; chat prompts go through the model's chat template (FailedPrecondition without one). */
  encode(prompt: Prompt | undefined): number[] {
    if (prompt?.kind === "tokens") return prompt.ids;
    if (prompt?.kind === "chat") return this.tokenizer.encode(this.chat(prompt.messages));
    if (prompt?.kind === "text") {
      const text = prompt.chatTemplate
        ? this.tokenizer.applyChatTemplate([{ role: "user", content: prompt.text }])
        : prompt.text;
      return this.tokenizer.encode(text);
    }
    throw new InvalidArgumentError("the prompt (text or token_ids) is required");
  }

  /** The text of generated tokens, as the worker's decoder spells it (special tokens skipped). */
  decode(ids: number[]): string {
    return this.tokenizer.decode(ids);
  }

  /** One token's text as the tokenizer spells it alone (logprobs name tokens by it). */
  tokenText(id: number): string {
    return this.tokenizer.decode([id], false);
  }

  /** A conversation is a request parameter: a model without a template makes it invalid, not a precondition. */
  private chat(messages: ChatMessage[]): string {
    try {
      return this.tokenizer.applyChatTemplate(messages);
    } catch (err) {
      if (err instanceof FailedPreconditionError)
        throw new InvalidArgumentError("the model has no chat template (tokenizer_config.json chat_template)");
      throw err;
    }
  }
}
