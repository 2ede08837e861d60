/**
 * One engine's measurement for `pnpm bench:cpu-anchor`, run in its own process (so load time and
 * resident memory are that engine's alone). Prints one JSON line:
 * {load_ms, prefill_tok_s, decode_tok_s, decode_tok_s_r16, decode_tok_s_r128, rss_mib, tokens}.
 *
 * Both engines run the same steps: load the model; feed the prompt and generate greedily (time to
 * the first token = prefill, the rest = decode); record peak RSS; then the decode runs of the base
 * and of each adapter, alternated (see `alternate`).
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

interface WorkerArgs {
  engine: "loramesh" | "llamacpp";
  model: string;
  adapters: Record<string, string>; // name (r16, r128) -> path
  prompt: number[];
  generate: number;
  threads: number;
  /** Decode runs per configuration (base and each adapter), alternated; 1 if absent. */
  reps?: number;
  /** Where the rotation starts (the round's index), so rounds balance the places too. */
  rotation?: number;
  /** Only load the model and report load_ms (the benchmark's cold-load process). */
  loadOnly?: boolean;
}

interface Run {
  prefillTokS: number;
  decodeTokS: number;
  tokens: number[];
}

const rssMib = () => process.resourceUsage().maxRSS / 1024;

/**
 * MiB of this process's memory mapped by 2 MiB page-table entries (file pages, anonymous), from
 * /proc/self/smaps_rollup; undefined off Linux. Which share of the weights sits in 2 MiB pages
 * depends on the page cache's folio sizes (how the file was read into the cache) as well as on
 * the engine's mapping (issue 17's fifteenth pass).
 */
function hugeMib(): { file_pmd_mib: number; anon_huge_mib: number } | undefined {
  let text: string;
  try {
    text = readFileSync("/proc/self/smaps_rollup", "utf8");
  } catch {
    return undefined;
  }
  const kib = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
  return {
    file_pmd_mib: Math.round(kib("FilePmdMapped") / 1024),
    anon_huge_mib: Math.round(kib("AnonHugePages") / 1024),
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

/**
 * The order of one rep's runs: rep k of round `rotation` starts `rotation + ⌊k/2⌋` places into
 * `names`, forwards on even reps and backwards on odd ones (base, r16, r128 / r128, r16, base / …).
 * Over three rounds of two reps each configuration takes each place of a rep equally often (as the
 * earlier forward-only rotation did), and now also follows each other configuration equally often:
 * forward only, r128 always ran right after r16 (or first in the process) and right before base,
 * so anything a run leaves behind for the next (caches, the pool's state, a drift in the machine)
 * fell on the adapters unevenly.
 */
function repOrder(names: readonly string[], rep: number, rotation: number): string[] {
  const n = names.length;
  const start = (rotation + Math.floor(rep / 2)) % n;
  const forward = Array.from({ length: n }, (_, i) => names[(start + i) % n] as string);
  return rep % 2 === 0 ? forward : forward.reverse();
}

/**
 * The decode figures of the base ("base") and each adapter: `reps` runs of each, in the order of
 * repOrder. On a shared VM one 64-token run's step time moves by ±15 % from run to run; measured
 * once each and always base-first (the earliest schedule), the adapters' share of a step carried
 * that noise and any drift within the process as their cost.
 * Returns the median decode rate, every run's rate, the order the runs ran in, and the first run's
 * tokens of each configuration.
 */
async function alternate(
  names: readonly string[],
  reps: number,
  rotation: number,
  run: (name: string) => Promise<Run>,
): Promise<Record<string, unknown>> {
  const rates = new Map<string, number[]>(names.map((n) => [n, []]));
  const tokens = new Map<string, number[]>();
  const order: string[] = [];
  for (let k = 0; k < reps; k++) {
    for (const name of repOrder(names, k, rotation)) {
      const r = await run(name);
      rates.get(name)?.push(r.decodeTokS);
      order.push(name);
      if (!tokens.has(name)) tokens.set(name, r.tokens);
    }
  }
  const out: Record<string, unknown> = { decode_order: order };
  for (const name of names) {
    const suffix = name === "base" ? "" : `_${name}`;
    out[`decode_tok_s${suffix}`] = median(rates.get(name) ?? []);
    out[`decode_runs${suffix}`] = rates.get(name);
    if (name !== "base") out[`tokens${suffix}`] = tokens.get(name);
  }
  return out;
}

async function loramesh(a: WorkerArgs): Promise<Record<string, unknown>> {
  const { native } = await import("@loramesh/native");
  const { Engine, LocalLoraBackend, Model, loadAdapter } = await import("@loramesh/engine");
  const { Tokenizer } = await import("@loramesh/formats");
  native.setNumThreads(a.threads);
  const t0 = performance.now();
  const model = Model.load(resolve(a.model));
  const loadMs = performance.now() - t0;
  if (a.loadOnly) return { load_ms: loadMs };
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
  // First run: prefill, the base tokens and peak RSS before any adapter is resident.
  const first = await run();
  const rss = rssMib();
  const pages = hugeMib();
  for (const [name, dir] of Object.entries(a.adapters)) lora.add(name, loadAdapter(resolve(dir), model.config));
  const decode = await alternate(["base", ...Object.keys(a.adapters)], a.reps ?? 1, a.rotation ?? 0, (name) =>
    run(name === "base" ? undefined : name),
  );
  return {
    load_ms: loadMs,
    prefill_tok_s: first.prefillTokS,
    rss_mib: rss,
    pages,
    tokens: first.tokens,
    ...decode,
  };
}

async function llamacpp(a: WorkerArgs): Promise<Record<string, unknown>> {
  const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });
  const t0 = performance.now();
  const model = await llama.loadModel({ modelPath: resolve(a.model), gpuLayers: 0 });
  const loadMs = performance.now() - t0;
  if (a.loadOnly) {
    await model.dispose();
    await llama.dispose();
    return { load_ms: loadMs };
  }
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
  const first = await run();
  const rss = rssMib();
  const pages = hugeMib();
  const decode = await alternate(["base", ...Object.keys(a.adapters)], a.reps ?? 1, a.rotation ?? 0, (name) =>
    run(name === "base" ? undefined : a.adapters[name]),
  );
  await model.dispose();
  await llama.dispose();
  return {
    load_ms: loadMs,
    prefill_tok_s: first.prefillTokS,
    rss_mib: rss,
    pages,
    tokens: first.tokens,
    ...decode,
  };
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
