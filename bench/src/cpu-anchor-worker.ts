/**
 * One engine's measurement for `pnpm bench:cpu-anchor`, run in its own process (so load time and
 * resident memory are that engine's alone). Prints one JSON line:
 * {load_ms, prefill_tok_s, decode_tok_s, decode_tok_s_r16, decode_tok_s_r128, rss_mib, tokens}.
 *
 * Both engines run the same steps: load the model; feed the prompt and generate greedily (time to
 * the first token = prefill, the rest = decode); record peak RSS; then the decode runs of the base
 * and of each adapter, lock-stepped (see `lockstep`; with `method: "runs"`, whole runs alternated:
 * `alternate`).
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
  /**
   * How the decode runs are taken: "lockstep" (default) steps every configuration's sequence in
   * turn within one run; "runs" runs each configuration's tokens on their own, alternating runs.
   */
  method?: "lockstep" | "runs";
  /** Lock-stepped: consecutive steps per turn (1 if absent). */
  block?: number;
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

/** One configuration's share of a lock-stepped decode run (see `lockstep`). */
interface StepRun {
  /** Seconds of each timed decode step, in order. */
  stepsS: number[];
  tokens: number[];
}

/**
 * The order in which the configurations take their turns: cycle j of a run uses repOrder(names,
 * j, rotation), so within a run every configuration takes each place of a cycle, and follows each
 * other configuration, about equally often (ABC CBA BCA ACB …).
 */
function cycleOrder(names: readonly string[], cycle: number, rotation: number, block = 1): string[] {
  return repOrder(names, cycle, rotation).flatMap((n) => Array.from({ length: block }, () => n));
}

/**
 * A baton for configurations that each run their own decode loop (loramesh: one Engine each):
 * one decode step at a time, in cycleOrder. A configuration holds the baton from the moment its
 * turn is granted until its loop asks for its next step (or its sequence ends), so a step's time
 * covers the forward pass and the engine's own work between steps (sampling, the loop), as the
 * engine's time per output token did; nothing of another configuration runs in between.
 */
class Baton {
  private cycle = 0;
  private turn: string[];
  private holder: string | undefined;
  private grantedAt = 0;
  private readonly waiting = new Map<string, () => void>();
  private readonly active: Set<string>;
  /** Each configuration's step times (seconds), every step it held the baton for. */
  readonly times = new Map<string, number[]>();

  constructor(
    private readonly names: readonly string[],
    private readonly rotation: number,
    private readonly block: number,
  ) {
    this.active = new Set(names);
    this.turn = cycleOrder(names, 0, rotation, block);
    for (const n of names) this.times.set(n, []);
  }

  /** Waits for `name`'s turn (ending its previous step if it held the baton). */
  async acquire(name: string): Promise<void> {
    if (this.holder === name) this.release(name);
    if (this.holder === undefined && this.turn[0] === name) return this.grant(name);
    await new Promise<void>((resolve) => this.waiting.set(name, resolve));
  }

  /** `name`'s sequence ended: its last step ends now and it takes no more turns. */
  leave(name: string): void {
    if (this.holder === name) this.release(name);
    this.active.delete(name);
    this.turn = this.turn.filter((n) => n !== name);
    this.next();
  }

  private grant(name: string): void {
    this.holder = name;
    this.turn.shift();
    this.grantedAt = performance.now();
  }

  private release(name: string): void {
    this.times.get(name)?.push((performance.now() - this.grantedAt) / 1000);
    this.holder = undefined;
    this.next();
  }

  private next(): void {
    if (this.holder !== undefined) return;
    while (this.turn.length === 0 && this.active.size > 0)
      this.turn = cycleOrder(this.names, ++this.cycle, this.rotation, this.block).filter((n) => this.active.has(n));
    const name = this.turn[0];
    const wake = name === undefined ? undefined : this.waiting.get(name);
    if (name === undefined || wake === undefined) return;
    this.waiting.delete(name);
    this.grant(name);
    wake();
  }
}

/**
 * The decode figures of the base ("base") and each adapter, measured lock-stepped: `reps` runs,
 * in each of which every configuration decodes the same number of tokens from the same prompt
 * (the same KV positions), one step at a time in cycleOrder, so each configuration's steps are
 * spread over the same seconds of the machine's state. Until issue 17's sixteenth pass each
 * configuration decoded its 64 tokens in a run of its own, minutes apart from the others' runs,
 * and the VM's streaming bandwidth (21–45 GB/s from one minute to the next) decided the r128
 * figure as much as the adapter did.
 * A run's rate for a configuration is its timed steps over their summed time (the first step of
 * each run, which computes the prompt's last token or block, is not a decode step and is not
 * timed). Returns the median rate per configuration, every run's rate, the order of the cycles'
 * first turns, each run's step-paired costs, and the first run's tokens of each configuration.
 * `block` > 1 gives each configuration that many consecutive steps a turn (to measure what
 * switching configurations at every step costs, if anything).
 */
async function lockstep(
  names: readonly string[],
  reps: number,
  rotation: number,
  run: (rep: number) => Promise<Map<string, StepRun>>,
): Promise<Record<string, unknown>> {
  const rates = new Map<string, number[]>(names.map((n) => [n, []]));
  const stepMs = new Map<string, number[]>(names.map((n) => [n, []]));
  const tokens = new Map<string, number[]>();
  for (let k = 0; k < reps; k++) {
    const byName = await run(k);
    for (const name of names) {
      const r = byName.get(name);
      if (!r || r.stepsS.length === 0) throw new Error(`no timed decode steps for ${name}`);
      rates.get(name)?.push(r.stepsS.length / r.stepsS.reduce((a, b) => a + b, 0));
      stepMs.get(name)?.push(...r.stepsS.map((x) => x * 1000));
      if (!tokens.has(name)) tokens.set(name, r.tokens);
    }
  }
  const out: Record<string, unknown> = {
    decode_order: Array.from({ length: reps }, (_, k) => cycleOrder(names, 0, rotation + k).join(" ")),
  };
  for (const name of names) {
    const suffix = name === "base" ? "" : `_${name}`;
    out[`decode_tok_s${suffix}`] = median(rates.get(name) ?? []);
    out[`decode_runs${suffix}`] = rates.get(name);
    out[`decode_step_ms_median${suffix}`] = median(stepMs.get(name) ?? []);
    if (name !== "base") out[`tokens${suffix}`] = tokens.get(name);
  }
  return out;
}

/**
 * The decode figures as measured before issue 17's sixteenth pass (`method: "runs"`): `reps` runs of each, in the order of
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
  const tokenizer = Tokenizer.load(resolve(a.model), model.config.eosTokenIds);
  const names = ["base", ...Object.keys(a.adapters)];
  // One engine per configuration (same model and LoRA backend, a KV cache each), so that their
  // sequences can be stepped in turn without being batched together; while a run is lock-stepped
  // every forward pass waits for its turn on the baton.
  const current: { baton?: Baton } = {};
  const engines = new Map(
    names.map((name) => [
      name,
      new Engine(model, tokenizer, {
        lora,
        kvBlocks,
        stepHook: async (_ids, _tokens, fwd) => {
          if (current.baton) await current.baton.acquire(name);
          return fwd();
        },
      }),
    ]),
  );
  const engine = engines.get("base") as InstanceType<typeof Engine>;
  const request = (adapterId?: string) => ({
    promptIds: a.prompt,
    ...(adapterId ? { adapterId } : {}),
    sampling: { maxTokens: a.generate, temperature: 0, ignoreEos: true },
  });
  const run = async (adapterId?: string): Promise<Run> => {
    const r = await engine.submit(request(adapterId)).result;
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
  const decode =
    a.method === "runs"
      ? await alternate(names, a.reps ?? 1, a.rotation ?? 0, (name) => run(name === "base" ? undefined : name))
      : await lockstep(names, a.reps ?? 1, a.rotation ?? 0, async (k) => {
          const baton = new Baton(names, (a.rotation ?? 0) + k, a.block ?? 1);
          current.baton = baton;
          try {
            const results = await Promise.all(
              names.map((name) =>
                (engines.get(name) as InstanceType<typeof Engine>)
                  .submit(request(name === "base" ? undefined : name))
                  .result.then((r) => {
                    baton.leave(name);
                    return r;
                  }),
              ),
            );
            // The first step of each run computes the prompt (or its last block): not a decode step.
            return new Map(
              names.map((name, i) => [
                name,
                { stepsS: (baton.times.get(name) ?? []).slice(1), tokens: results[i]?.tokenIds ?? [] },
              ]),
            );
          } finally {
            current.baton = undefined;
          }
        });
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
  const names = ["base", ...Object.keys(a.adapters)];
  const decode =
    a.method === "runs"
      ? await alternate(names, a.reps ?? 1, a.rotation ?? 0, (name) =>
          run(name === "base" ? undefined : a.adapters[name]),
        )
      : await lockstepLlama(a, model, names);
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

/**
 * llama.cpp's side of `lockstep`: one context per configuration (the adapter is fixed at context
 * creation in node-llama-cpp), each with its own sequence, advanced one token at a time (one
 * `next()` of its evaluation: a decode step and the sampling) in cycleOrder. The prompt is computed
 * once per context; later runs drop the KV entries from the prompt's last position on and start
 * from that token, so every run decodes at the same positions as the first.
 */
async function lockstepLlama(
  a: WorkerArgs,
  model: import("node-llama-cpp").LlamaModel,
  names: readonly string[],
): Promise<Record<string, unknown>> {
  type Token = Parameters<typeof model.detokenize>[0][number];
  const contexts = new Map<string, import("node-llama-cpp").LlamaContext>();
  try {
    for (const name of names) {
      const adapter = name === "base" ? undefined : a.adapters[name];
      contexts.set(
        name,
        await model.createContext({
          contextSize: Math.max(512, a.prompt.length + a.generate + 16),
          batchSize: Math.max(512, a.prompt.length),
          threads: a.threads,
          sequences: 1,
          ...(adapter ? { lora: { adapters: [{ filePath: resolve(adapter), scale: 1 }] } } : {}),
        }),
      );
    }
    const seqs = new Map(
      names.map((n) => [n, (contexts.get(n) as import("node-llama-cpp").LlamaContext).getSequence()]),
    );
    const last = a.prompt.length - 1;
    return await lockstep(names, a.reps ?? 1, a.rotation ?? 0, async (k) => {
      const gens = new Map<string, AsyncGenerator<Token, void, void | Token | Token[]>>();
      for (const name of names) {
        const seq = seqs.get(name) as ReturnType<import("node-llama-cpp").LlamaContext["getSequence"]>;
        if (seq.nextTokenIndex > last) await seq.eraseContextTokenRanges([{ start: last, end: seq.nextTokenIndex }]);
        const input = seq.nextTokenIndex === 0 ? a.prompt : a.prompt.slice(last);
        gens.set(name, seq.evaluate(input as Token[], { temperature: 0 }));
      }
      const out = new Map<string, StepRun>(names.map((n) => [n, { stepsS: [], tokens: [] }]));
      try {
        for (let cycle = 0; ; cycle++) {
          const order = cycleOrder(names, cycle, (a.rotation ?? 0) + k, a.block ?? 1).filter(
            (n) => (out.get(n) as StepRun).tokens.length < a.generate,
          );
          if (order.length === 0) break;
          for (const name of order) {
            const r = out.get(name) as StepRun;
            if (r.tokens.length >= a.generate) continue;
            const t0 = performance.now();
            const next = await (gens.get(name) as AsyncGenerator<Token, void, void | Token | Token[]>).next();
            const dt = (performance.now() - t0) / 1000;
            if (next.done) throw new Error(`llama.cpp ended ${name}'s sequence after ${r.tokens.length} tokens`);
            // The first token of a run comes from the prompt's (last) position: not a decode step.
            if (r.tokens.length > 0) r.stepsS.push(dt);
            r.tokens.push(next.value);
          }
        }
      } finally {
        for (const g of gens.values()) await g.return();
      }
      return out;
    });
  } finally {
    for (const c of contexts.values()) await c.dispose();
  }
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
