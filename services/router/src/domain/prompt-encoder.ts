/** Turns a request's prompt into token ids with the base model's tokenizer and chat template. */
import { InvalidArgumentError } from "@loramesh/core";
import { Tokenizer } from "@loramesh/engine";
import type { Prompt } from "./types";

export class PromptEncoder {
  private readonly tokenizer: Tokenizer;

  constructor(modelDir: string) {
    this.tokenizer = Tokenizer.load(modelDir);
  }

  /** Token ids of the prompt; chat prompts go through the model's chat template (FailedPrecondition without one). */
  encode(prompt: Prompt | undefined): number[] {
    if (prompt?.kind === "tokens") return prompt.ids;
    if (prompt?.kind === "chat") return this.tokenizer.encode(this.tokenizer.applyChatTemplate(prompt.messages));
    if (prompt?.kind === "text") {
      const text = prompt.chatTemplate
        ? this.tokenizer.applyChatTemplate([{ role: "user", content: prompt.text }])
        : prompt.text;
      return this.tokenizer.encode(text);
    }
    throw new InvalidArgumentError("the prompt (text or token_ids) is required");
  }
}
