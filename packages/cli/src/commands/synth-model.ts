import { formatOptionsHelp, loadConfig, stringOption } from "@loramesh/core";
import { InvalidArgumentError } from "@loramesh/errors";
import type { Command } from "../command";
import { SHAPES } from "../synth/shapes";
import {
  LORA_TARGETS,
  shapeByName,
  synthModel,
  type LoraTarget,
  type SynthAdapterSpec,
  type SynthDtype,
} from "../synth/synth-model";
import type { GgmlType } from "../synth/gguf-writer";

const options = {
  out: stringOption({ flag: "out", description: "output directory" }),
  shape: stringOption({
    flag: "shape",
    default: "tinyllama-1.1b",
    description: `model shape: ${Object.keys(SHAPES).join(", ")}`,
  }),
  dtype: stringOption({ flag: "dtype", default: "bf16", description: "safetensors dtype: f32, bf16 or f16" }),
  ranks: stringOption({
    flag: "ranks",
    default: "16,128",
    description: "PEFT adapters to write, by rank (comma-separated; empty for none)",
  }),
  targets: stringOption({ flag: "targets", default: LORA_TARGETS.join(","), description: "adapter target modules" }),
  gguf: stringOption({
    flag: "gguf",
    default: "",
    description: "GGUF copies for llama.cpp: F32, F16 or F32,F16 (llama shapes)",
  }),
  seed: stringOption({ flag: "seed", default: "1", description: "random seed (same seed, same weights)" }),
};

const list = (s: string) =>
  s
    .split(",")
    .map((x) => x.trim())
    .filter((x) => x.length > 0);

/** `loramesh synth-model`: a real-shaped checkpoint with random weights, adapters and GGUF copies. */
export const synthModelCommand: Command = {
  name: "synth-model",
  summary: "write a real-shaped model with random weights (safetensors, PEFT adapters, GGUF)",
  help: () =>
    `Usage: loramesh synth-model --out DIR [--shape tinyllama-1.1b] [--dtype bf16] [--ranks 16,128] [--gguf F32,F16]\n\nWrites DIR/model (config.json, model.safetensors, tokenizer), DIR/adapters/rR (PEFT) and, with --gguf,\nDIR/model-TYPE.gguf and DIR/adapters/rR-TYPE.gguf. Existing files are kept.\n\nOptions:\n${formatOptionsHelp(options)}\n`,
  async run(argv) {
    const { config, positionals } = loadConfig(options, argv);
    if (positionals.length > 0) throw new InvalidArgumentError(`unexpected argument ${JSON.stringify(positionals[0])}`);
    const shape = shapeByName(config.shape);
    if (!["f32", "bf16", "f16"].includes(config.dtype))
      throw new InvalidArgumentError(`--dtype must be f32, bf16 or f16`);
    const targets = list(config.targets);
    const bad = targets.find((t) => !(LORA_TARGETS as readonly string[]).includes(t));
    if (bad !== undefined)
      throw new InvalidArgumentError(`unknown target ${JSON.stringify(bad)}; known: ${LORA_TARGETS.join(", ")}`);
    const adapters: SynthAdapterSpec[] = list(config.ranks).map((r) => {
      const rank = Number(r);
      if (!Number.isInteger(rank) || rank < 1 || rank > 256)
        throw new InvalidArgumentError(`--ranks: ${r} is not a rank in 1..256`);
      return { name: `r${rank}`, rank, targets: targets as LoraTarget[] };
    });
    const gguf = list(config.gguf);
    if (gguf.some((g) => g !== "F32" && g !== "F16")) throw new InvalidArgumentError("--gguf takes F32 and/or F16");
    const seed = Number(config.seed);
    if (!Number.isInteger(seed)) throw new InvalidArgumentError("--seed must be an integer");
    synthModel(config.out, {
      shape,
      dtype: config.dtype as SynthDtype,
      adapters,
      gguf: gguf as GgmlType[],
      seed,
      onFile: (p) => process.stderr.write(`writing ${p}\n`),
    });
    process.stdout.write(`${config.out}\n`);
    return 0;
  },
};
