import {
  booleanOption,
  formatOptionsHelp,
  intOption,
  InvalidArgumentError,
  loadConfig,
  numberOption,
  stringOption,
} from "@loramesh/core";
import type { Command } from "../command";
import { OFFLINE_ADAPTER_ID, offlineEngine, parseIds } from "../offline-engine";

const options = {
  model: stringOption({ flag: "model", description: "Hugging Face model directory (offline generation)" }),
  adapter: stringOption({ flag: "adapter", default: "", description: "PEFT adapter directory" }),
  maxTokens: intOption({ flag: "max-tokens", default: 64, min: 1, description: "most tokens to generate" }),
  temperature: numberOption({ flag: "temperature", default: 0, min: 0, description: "0 = greedy" }),
  topP: numberOption({ flag: "top-p", default: 1, min: 0, max: 1, description: "nucleus sampling mass" }),
  topK: intOption({ flag: "top-k", default: 0, min: 0, description: "keep the k most likely tokens (0 = all)" }),
  seed: intOption({ flag: "seed", default: -1, min: -1, description: "sampler seed (-1 = random)" }),
  ids: stringOption({ flag: "ids", default: "", description: "prompt as token ids instead of text: 1,2,3" }),
  chat: booleanOption({ flag: "chat", description: "apply the model's chat template to PROMPT as a user message" }),
  json: booleanOption({ flag: "json", description: "print one JSON object with token_ids, text and finish_reason" }),
};

/** `loramesh generate --model DIR`: generation on this machine, streamed to stdout. */
export const generateCommand: Command = {
  name: "generate",
  summary: "generate text from a prompt (offline with --model DIR)",
  help: () =>
    `Usage: loramesh generate --model DIR [--adapter DIR] [--max-tokens N] [--temperature T] (--ids 1,2,3 | PROMPT)\n\nOptions:\n${formatOptionsHelp(options)}\n`,
  async run(argv) {
    const { config, positionals } = loadConfig(options, argv);
    const engine = offlineEngine(config.model, config.adapter || undefined);
    const tokenizer = engine.tokenizer;
    let promptIds: number[];
    if (config.ids !== "") {
      if (positionals.length > 0) throw new InvalidArgumentError("give either --ids or a PROMPT, not both");
      try {
        promptIds = parseIds(config.ids);
      } catch (err) {
        throw new InvalidArgumentError((err as Error).message);
      }
    } else {
      if (positionals.length === 0) throw new InvalidArgumentError("a PROMPT (or --ids) is required");
      if (!tokenizer) throw new InvalidArgumentError("the model has no tokenizer; use --ids");
      const text = positionals.join(" ");
      promptIds = tokenizer.encode(config.chat ? tokenizer.applyChatTemplate([{ role: "user", content: text }]) : text);
    }
    const handle = engine.submit(
      {
        promptIds,
        ...(config.adapter ? { adapterId: OFFLINE_ADAPTER_ID } : {}),
        sampling: {
          maxTokens: config.maxTokens,
          temperature: config.temperature,
          topP: config.topP,
          topK: config.topK,
          seed: config.seed >= 0 ? config.seed : undefined,
        },
      },
      config.json ? undefined : (update) => process.stdout.write(update.text),
    );
    const result = await handle.result;
    if (config.json) {
      process.stdout.write(
        `${JSON.stringify({ token_ids: result.tokenIds, text: result.text, finish_reason: result.finishReason, prompt_tokens: result.promptTokens })}\n`,
      );
    } else {
      process.stdout.write("\n");
    }
    return 0;
  },
};
