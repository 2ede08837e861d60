/**
 * One engine's measurement for `pnpm bench:cpu-anchor`, run in its own process (so load time and
 * resident memory are that engine's alone). Prints one JSON line:
 * {load_ms, prefill_tok_s, decode_tok_s, decode_tok_s_r16, decode_tok_s_r128, rss_mib, tokens}.
 *
 * Both engines run the same steps: load the model; feed the prompt and generate greedily (time to
 * the first token = prefill, the rest = decode); record peak RSS; then the same with each adapter.
 */
import { resolve } from "node:path";

interface WorkerArgs {
  engine: "loramesh" | "llamacpp";
  model: string;
  adapters: Record<string, string>; // name (r16, r128) -> path
  prompt: number[];
  generate: number;
  threads: number;
}

interface Run {
  prefillTokS: number;
  decodeTokS: number;
  tokens: number[];
}

const rssMib = () => process.resourceUsage().maxRSS / 1024;

async function loramesh(a: WorkerArgs): Promise<Record<string, unknown>> {
  const { native } = await import("@loramesh/native");
  const { Engine, LocalLoraBackend, Model, loadAdapter } = await import("@loramesh/engine");
  const { Tokenizer } = await import("@loramesh/formats");
  native.setNumThreads(a.threads);
  const t0 = performance.now();
  const model = Model.load(resolve(a.model));
  const loadMs = performance.now() - t0;
  const lora = new LocalLoraBackend(model.config);
  // A KV cache for this benchmark's sequence only (the default reserves 256 MiB).
  const kvBlocks = Math.ceil((a.prompt.length + a.generate + 16) / 16);
  const engine = new Engine(model, Tokenizer.load(resolve(a.model), model.config.eosTokenIds), { lora, kvBlocks });
  const run = async (adapterId?: string): Promise<Run> => {
    const r = await engine.submit({
      promptIds: a.prompt,
      ...(adapterId ? { adapterId } : {}),
      sampling: { maxTokens: a.generate, temperature: 0, ignoreEos: true },
    }).result;
    return {
      prefillTokS: (a.prompt.length * 1000) / r.timings.timeToFirstTokenMs,
      decodeTokS: 1000 / r.timings.timePerOutputTokenMs,
      tokens: r.tokenIds,
    };
  };
  const base = await run();
  const rss = rssMib();
  const out: Record<string, unknown> = {
    load_ms: loadMs,
    prefill_tok_s: base.prefillTokS,
    decode_tok_s: base.decodeTokS,
    rss_mib: rss,
    tokens: base.tokens,
  };
  for (const [name, dir] of Object.entries(a.adapters)) {
    lora.add(name, loadAdapter(resolve(dir), model.config));
    const r = await run(name);
    out[`decode_tok_s_${name}`] = r.decodeTokS;
    out[`tokens_${name}`] = r.tokens;
    lora.remove(name);
  }
  return out;
}

async function llamacpp(a: WorkerArgs): Promise<Record<string, unknown>> {
  const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });
  const t0 = performance.now();
  const model = await llama.loadModel({ modelPath: resolve(a.model), gpuLayers: 0 });
  const loadMs = performance.now() - t0;
  type Token = Parameters<typeof model.detokenize>[0][number];
  const run = async (adapter?: string): Promise<Run> => {
    const context = await model.createContext({
      contextSize: Math.max(512, a.prompt.length + a.generate + 16),
      batchSize: Math.max(512, a.prompt.length),
      threads: a.threads,
      sequences: 1,
      ...(adapter ? { lora: { adapters: [{ filePath: resolve(adapter), scale: 1 }] } } : {}),
    });
    try {
      const seq = context.getSequence();
      const tokens: number[] = [];
      const start = performance.now();
      let first = 0;
      for await (const token of seq.evaluate(a.prompt as Token[], { temperature: 0 })) {
        if (tokens.length === 0) first = performance.now();
        tokens.push(token);
        if (tokens.length >= a.generate) break;
      }
      const end = performance.now();
      return {
        prefillTokS: (a.prompt.length * 1000) / (first - start),
        decodeTokS: ((tokens.length - 1) * 1000) / (end - first),
        tokens,
      };
    } finally {
      await context.dispose();
    }
  };
  const base = await run();
  const rss = rssMib();
  const out: Record<string, unknown> = {
    load_ms: loadMs,
    prefill_tok_s: base.prefillTokS,
    decode_tok_s: base.decodeTokS,
    rss_mib: rss,
    tokens: base.tokens,
  };
  for (const [name, path] of Object.entries(a.adapters)) {
    const r = await run(path);
    out[`decode_tok_s_${name}`] = r.decodeTokS;
    out[`tokens_${name}`] = r.tokens;
  }
  await model.dispose();
  await llama.dispose();
  return out;
}

async function main(): Promise<void> {
  const a = JSON.parse(process.argv[2] ?? "{}") as WorkerArgs;
  const result = a.engine === "loramesh" ? await loramesh(a) : await llamacpp(a);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
