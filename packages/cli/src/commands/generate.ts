import {
  booleanOption,
  formatOptionsHelp,
  intOption,
  loadConfig,
  numberOption,
  stringOption,
  type ConfigOf,
} from "@loramesh/core";
import { InvalidArgumentError } from "@loramesh/errors";
import { FinishReason, finishReasonToJSON } from "@loramesh/proto";
import { LoraMeshClient } from "@loramesh/sdk";
import type { Command } from "../command";
import { clientOptions, connection } from "../client-options";
import { OFFLINE_ADAPTER_ID, offlineEngine, parseIds } from "../offline-engine";

const options = {
  ...clientOptions,
  model: stringOption({
    flag: "model",
    default: "",
    description: "generate offline on this Hugging Face model directory instead of through the router",
  }),
  adapter: stringOption({
    flag: "adapter",
    default: "",
    description: "adapter name (through the router) or PEFT adapter directory (with --model)",
  }),
  maxTokens: intOption({ flag: "max-tokens", default: 64, min: 1, description: "most tokens to generate" }),
  temperature: numberOption({ flag: "temperature", default: 0, min: 0, description: "0 = greedy" }),
  topP: numberOption({ flag: "top-p", default: 1, min: 0, max: 1, description: "nucleus sampling mass" }),
  topK: intOption({ flag: "top-k", default: 0, min: 0, description: "keep the k most likely tokens (0 = all)" }),
  seed: intOption({ flag: "seed", default: -1, min: -1, description: "sampler seed (-1 = random)" }),
  ignoreEos: booleanOption({
    flag: "ignore-eos",
    description: "keep generating past end-of-sequence tokens (exactly --max-tokens tokens; benchmarks)",
  }),
  minTokens: intOption({
    flag: "min-tokens",
    default: 0,
    min: 0,
    description: "tokens to generate before end-of-sequence or a stop may end the output",
  }),
  ids: stringOption({ flag: "ids", default: "", description: "prompt as token ids instead of text: 1,2,3" }),
  chat: booleanOption({ flag: "chat", description: "apply the model's chat template to PROMPT as a user message" }),
  json: booleanOption({ flag: "json", description: "print one JSON object with token_ids, text and finish_reason" }),
};

type Config = ConfigOf<typeof options>;

function prompt(config: Config, positionals: string[]): { ids?: number[]; text?: string } {
  if (config.ids !== "") {
    if (positionals.length > 0) throw new InvalidArgumentError("give either --ids or a PROMPT, not both");
    try {
      return { ids: parseIds(config.ids) };
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  }
  if (positionals.length === 0) throw new InvalidArgumentError("a PROMPT (or --ids) is required");
  return { text: positionals.join(" ") };
}

function finishName(reason: FinishReason): string {
  return finishReasonToJSON(reason).replace("FINISH_REASON_", "").toLowerCase();
}

/** `loramesh generate`: through the router, or offline with --model DIR. */
export const generateCommand: Command = {
  name: "generate",
  summary: "generate text through the cluster (or offline with --model DIR)",
  help: () =>
    `Usage:\n  loramesh generate [--router HOST:PORT] [--adapter NAME] [--max-tokens N] [--temperature T] [--ignore-eos] (--ids 1,2,3 | PROMPT) [--json]\n  loramesh generate --model DIR [--adapter DIR] [--max-tokens N] [--temperature T] (--ids 1,2,3 | PROMPT) [--json]\n\nOptions:\n${formatOptionsHelp(options)}\n`,
  async run(argv) {
    const { config, positionals } = loadConfig(options, argv);
    const input = prompt(config, positionals);
    const sampling = {
      maxTokens: config.maxTokens,
      temperature: config.temperature,
      topP: config.topP,
      topK: config.topK,
      ...(config.seed >= 0 ? { seed: config.seed } : {}),
      ignoreEos: config.ignoreEos,
      minTokens: config.minTokens,
    };
    if (config.model !== "") return offline(config, input, sampling);

    const client = new LoraMeshClient(connection(config));
    try {
      const ids: number[] = [];
      let text = "";
      let finish = FinishReason.FINISH_REASON_UNSPECIFIED;
      const request = {
        prompt: input.ids
          ? { $case: "tokenIds" as const, value: { ids: input.ids } }
          : { $case: "text" as const, value: input.text as string },
        adapter: config.adapter,
        applyChatTemplate: config.chat,
        sampling: { stop: [], stopTokenIds: [], ...sampling },
      };
      for await (const delta of client.generate(request, { deadlineMs: 10 * 60_000 })) {
        ids.push(...delta.tokenIds);
        text += delta.text;
        if (!config.json) process.stdout.write(delta.text);
        if (delta.finishReason !== FinishReason.FINISH_REASON_UNSPECIFIED) finish = delta.finishReason;
      }
      process.stdout.write(
        config.json ? `${JSON.stringify({ token_ids: ids, text, finish_reason: finishName(finish) })}\n` : "\n",
      );
      return 0;
    } finally {
      client.close();
    }
  },
};

async function offline(
  config: Config,
  input: { ids?: number[]; text?: string },
  sampling: {
    maxTokens: number;
    temperature: number;
    topP: number;
    topK: number;
    seed?: number;
    ignoreEos: boolean;
    minTokens: number;
  },
): Promise<number> {
  const engine = offlineEngine(config.model, config.adapter || undefined);
  const tokenizer = engine.tokenizer;
  let promptIds = input.ids;
  if (!promptIds) {
    if (!tokenizer) throw new InvalidArgumentError("the model has no tokenizer; use --ids");
    const text = input.text as string;
    promptIds = tokenizer.encode(config.chat ? tokenizer.applyChatTemplate([{ role: "user", content: text }]) : text);
  }
  const handle = engine.submit(
    { promptIds, ...(config.adapter ? { adapterId: OFFLINE_ADAPTER_ID } : {}), sampling },
    config.json ? undefined : (update) => process.stdout.write(update.text),
  );
  const result = await handle.result;
  process.stdout.write(
    config.json
      ? `${JSON.stringify({ token_ids: result.tokenIds, text: result.text, finish_reason: result.finishReason, prompt_tokens: result.promptTokens })}\n`
      : "\n",
  );
  return 0;
}
