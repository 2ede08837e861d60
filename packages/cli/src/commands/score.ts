import { formatOptionsHelp, loadConfig, stringOption } from "@loramesh/core";
import { InvalidArgumentError } from "@loramesh/errors";
import type { Command } from "../command";
import { OFFLINE_ADAPTER_ID, offlineEngine, parseIds } from "../offline-engine";

const options = {
  model: stringOption({
    flag: "model",
    description: "Hugging Face model directory (config.json, *.safetensors, tokenizer.json)",
  }),
  adapter: stringOption({
    flag: "adapter",
    default: "",
    description: "PEFT adapter directory (adapter_config.json, adapter_model.safetensors)",
  }),
  ids: stringOption({ flag: "ids", description: "token ids, comma-separated: 1,2,3" }),
};

/** `loramesh score`: teacher-forced next-token logits, offline. */
export const scoreCommand: Command = {
  name: "score",
  summary: "print teacher-forced next-token logits for token ids (offline, no services)",
  help: () =>
    `Usage: loramesh score --model DIR [--adapter DIR] --ids 1,2,3\n\nPrints one JSON object {"logits": [[...], ...]}: one row of next-token logits per input position.\n\nOptions:\n${formatOptionsHelp(options)}\n`,
  async run(argv) {
    const { config, positionals } = loadConfig(options, argv);
    if (positionals.length > 0) throw new InvalidArgumentError(`unexpected argument ${JSON.stringify(positionals[0])}`);
    let ids: number[];
    try {
      ids = parseIds(config.ids);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
    const engine = offlineEngine(config.model, config.adapter || undefined);
    const rows = await engine.score(ids, config.adapter ? OFFLINE_ADAPTER_ID : undefined);
    process.stdout.write(`{"logits":[${rows.map((r) => `[${Array.from(r).join(",")}]`).join(",")}]}\n`);
    return 0;
  },
};
