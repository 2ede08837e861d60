/**
 * `pnpm bench:cpu-anchor [--json] [--dtype bf16|f32] [--quick] [--rounds N] [--reps N] [--method lockstep|runs]
 * [--block N]`: loramesh against llama.cpp
 * (node-llama-cpp, prebuilt) on the same generated TinyLlama-1.1B-shaped model, in one run.
 *
 * The model is written once by the synth-model generator (safetensors for loramesh, GGUF with q/k
 * permuted for llama.cpp; same random weights) and cached. Each round runs every engine in a fresh
 * process, the engines in ABBA order over the rounds, so both see the same spread of the machine's
 * load; the figures are medians over rounds. Within a process the base and adapter decode runs are
 * lock-stepped (cpu-anchor-worker's `lockstep`: every configuration decodes the same positions one
 * step at a time in turn), so the adapters are measured against the base over the same seconds;
 * `--method runs` gives the earlier whole alternated runs. The decode rates are medians over all
 * runs; every run is in the JSON (decode_runs) with the order it ran in, and each adapter's cost
 * per step within each process (adapter_step_cost).
 * "floor" is the decode rate the machine's measured read bandwidth allows at this weight precision:
 * the median of 2-thread streaming-read passes taken after every engine process (see probeRound).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { statSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { shapeByName, synthModel, type SynthAdapterSpec, LORA_TARGETS } from "@loramesh/cli";
import { native } from "@loramesh/native";
import { applyStep, roundPlan, type EngineName } from "./cpu-anchor-load";

interface Options {
  json: boolean;
  dtype: "bf16" | "f32";
  quick: boolean;
  shape: string;
  dir: string | undefined;
  rounds: number | undefined;
  reps: number | undefined;
  threads: number;
  method: "lockstep" | "runs";
  block: number;
}

function parseArgs(argv: readonly string[]): Options {
  const o: Options = {
    json: false,
    dtype: "bf16",
    quick: false,
    shape: "tinyllama-1.1b",
    dir: undefined,
    rounds: undefined,
    reps: undefined,
    threads: 0,
    method: "lockstep",
    block: 1,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    if (arg === "--json") o.json = true;
    else if (arg === "--quick") o.quick = true;
    else if (arg === "--dtype") {
      const d = value();
      if (d !== "bf16" && d !== "f32") throw new Error("--dtype must be bf16 or f32");
      o.dtype = d;
    } else if (arg === "--shape") o.shape = value();
    else if (arg === "--dir") o.dir = value();
    else if (arg === "--rounds") o.rounds = Number(value());
    else if (arg === "--reps") o.reps = Number(value());
    else if (arg === "--threads") o.threads = Number(value());
    else if (arg === "--block") o.block = Number(value());
    else if (arg === "--method") {
      const m = value();
      if (m !== "lockstep" && m !== "runs") throw new Error("--method must be lockstep or runs");
      o.method = m;
    } else throw new Error(`unknown argument ${arg}`);
  }
  return o;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] as number;
};

const PROBE_BYTES = 1 << 30;
const PROBE_PASSES = 5;

const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;

function cpuModel(): string {
  try {
    const line = execFileSync("lscpu", { encoding: "utf8" })
      .split("\n")
      .find((l) => l.startsWith("Model name:"));
    if (line) return line.slice("Model name:".length).trim();
  } catch {
    // lscpu missing: fall back to Node's view
  }
  return cpus()[0]?.model ?? "unknown";
}

// llama.cpp (node-llama-cpp 3.21.1 defaults) maps the GGUF with MAP_SHARED|MAP_POPULATE and
// MADV_WILLNEED (seen with strace), so its load time includes making the weights resident. loramesh
// runs with LORAMESH_PREFAULT=sync for the same: load_ms ends when the weights are resident and the
// first request runs at full speed (the service default, async, would move that cost into the first
// tokens). An explicit LORAMESH_PREFAULT in the environment is kept and reported.
const PREFAULT = process.env["LORAMESH_PREFAULT"] ?? "sync";

function worker(args: Record<string, unknown>): Record<string, unknown> {
  const r = spawnSync(process.execPath, [join(__dirname, "cpu-anchor-worker.js"), JSON.stringify(args)], {
    encoding: "utf8",
    maxBuffer: 1 << 24,
    env: { ...process.env, LORAMESH_PREFAULT: PREFAULT },
  });
  if (r.status !== 0) throw new Error(`${String(args["engine"])} worker failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop() as string) as Record<string, unknown>;
}

const KEYS = [
  "load_ms",
  "load_ms_cold",
  "prefill_tok_s",
  "decode_tok_s",
  "decode_tok_s_r16",
  "decode_tok_s_r128",
  "rss_mib",
] as const;

function agree(a: unknown, b: unknown): number {
  const x = a as number[],
    y = b as number[];
  let n = 0;
  while (n < x.length && n < y.length && x[n] === y[n]) n++;
  return n;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const shape = shapeByName(o.shape);
  const threads = o.threads > 0 ? o.threads : cpus().length;
  // Lock-stepped (the default since issue 17's sixteenth pass): more, shorter rounds, the engines'
  // processes in ABBA order (AB, BA, AB, …), one lock-stepped decode run of every configuration
  // per process (cpu-anchor-worker's `lockstep`). The earlier method ("runs"): 3 rounds of 2
  // alternated runs per configuration (1 round of 3 with --quick).
  const lockstepped = o.method === "lockstep";
  const rounds = o.rounds ?? (lockstepped ? (o.quick ? 2 : 6) : o.quick ? 1 : 3);
  const reps = o.reps ?? (lockstepped ? 1 : o.quick ? 3 : 2);
  const promptLength = o.quick ? 64 : 256,
    generate = o.quick ? 16 : 64;
  const gguf = o.dtype === "f32" ? "F32" : "F16";
  const dir = o.dir ?? join(tmpdir(), `loramesh-cpu-anchor-${shape.name}-${o.dtype}`);
  const adapters: SynthAdapterSpec[] = [16, 128].map((rank) => ({ name: `r${rank}`, rank, targets: LORA_TARGETS }));
  synthModel(dir, {
    shape,
    dtype: o.dtype,
    adapters,
    gguf: [gguf],
    onFile: (p) => process.stderr.write(`cpu-anchor: writing ${p}\n`),
  });
  // Prompt: fixed pseudo-random ids past the special and byte tokens.
  const prompt = Array.from({ length: promptLength }, (_, i) => 259 + ((i * 7919 + 13) % (shape.vocabSize - 259)));
  const common = { prompt, generate, threads };
  const engines = {
    loramesh: {
      engine: "loramesh",
      model: join(dir, "model"),
      adapters: Object.fromEntries(adapters.map((a) => [a.name, join(dir, "adapters", a.name)])),
    },
    llamacpp: {
      engine: "llamacpp",
      model: join(dir, `model-${gguf}.gguf`),
      adapters: Object.fromEntries(adapters.map((a) => [a.name, join(dir, "adapters", `${a.name}-${gguf}.gguf`)])),
    },
  };
  const results: Record<string, Array<Record<string, unknown>>> = { loramesh: [], llamacpp: [] };
  const loads: number[] = [];
  // The floor's read bandwidth, probed next to the decode runs: after every engine process,
  // PROBE_PASSES passes of a 2-thread (the engines' thread count) streaming read of 1 GiB; the
  // floor is the median of all passes, reported with its range. On the 2-vCPU VM single passes
  // span ~13–59 GB/s within a minute, so the old figure (the best of 3 passes once at the end, kept
  // as membw_gbs_best3) moved 28–47 GB/s between runs while the engines did not.
  const probe: number[] = [];
  const probeRuns: number[] = [];
  const probeRound = () => {
    const passes = native.readBandwidthPasses(PROBE_BYTES, PROBE_PASSES, threads);
    probe.push(...passes);
    probeRuns.push(median(passes));
  };
  // Each timed load starts from a page-cache state set just before it (cpu-anchor-load): load_ms
  // with the engine's own weights cached, load_ms_cold from a separate load-only process after
  // evicting both engines' weights. Until the fifteenth pass the state was whatever the previous
  // process had left.
  const weightFiles: Record<EngineName, string[]> = {
    loramesh: [join(dir, "model", "model.safetensors")],
    llamacpp: [engines.llamacpp.model],
  };
  const loadRuns: Array<{ round: number; engine: EngineName; state: string; load_ms: number; resident: number[] }> = [];
  for (let r = 0; r < rounds; r++) {
    // Alternate which engine goes first (the machine's drift within a round falls on both).
    const order: EngineName[] = r % 2 === 0 ? ["loramesh", "llamacpp"] : ["llamacpp", "loramesh"];
    const cold = new Map<EngineName, number>();
    for (const step of roundPlan(order, weightFiles)) {
      const name = step.engine;
      const state = applyStep(step, native.fileCache);
      const resident = weightFiles[name].map((f) => state[f] ?? -1);
      if (step.state === "cold") {
        const res = worker({ ...engines[name], ...common, loadOnly: true });
        cold.set(name, res["load_ms"] as number);
        loadRuns.push({
          round: r + 1,
          engine: name,
          state: "cold",
          load_ms: round(res["load_ms"] as number),
          resident,
        });
        continue;
      }
      loads.push(loadavg()[0] as number);
      const res: Record<string, unknown> = {
        ...worker({ ...engines[name], ...common, reps, rotation: r, method: o.method, block: o.block }),
        load_ms_cold: cold.get(name),
      };
      results[name]?.push(res);
      loadRuns.push({ round: r + 1, engine: name, state: "warm", load_ms: round(res["load_ms"] as number), resident });
      probeRound();
      process.stderr.write(
        `cpu-anchor: round ${r + 1}/${rounds} ${name}: ${JSON.stringify(Object.fromEntries(Object.entries(res).filter(([k]) => !k.startsWith("tokens"))))}\n`,
      );
    }
  }
  // Decode rates: the median of every alternated run of all rounds (the runs pooled, not a median
  // of per-round medians); the other figures: the median over rounds.
  const samples = (rs: Array<Record<string, unknown>>, k: (typeof KEYS)[number]): number[] =>
    k.startsWith("decode_tok_s")
      ? rs.flatMap((x) => (x[k.replace("decode_tok_s", "decode_runs")] as number[] | undefined) ?? [x[k] as number])
      : rs.map((x) => x[k] as number);
  const summarize = (rs: Array<Record<string, unknown>>) =>
    Object.fromEntries(KEYS.map((k) => [k, round(median(samples(rs, k)))]));
  // Every decode run in the order it ran, per engine process, and each adapter's cost per step
  // within each process (its median step time over the base's, same process): a figure that the
  // machine's speed from one process to the next does not move. The headline rates above pool
  // the runs of all processes.
  const runsOf = (rs: Array<Record<string, unknown>>) =>
    rs.map((x) => ({
      order: x["decode_order"],
      base: x["decode_runs"],
      r16: x["decode_runs_r16"],
      r128: x["decode_runs_r128"],
    }));
  const overheadOf = (rs: Array<Record<string, unknown>>) =>
    Object.fromEntries(
      ["r16", "r128"].map((a) => {
        const by = rs.map((x) => {
          const base = x["decode_runs"] as number[] | undefined,
            ad = x[`decode_runs_${a}`] as number[] | undefined;
          return base && ad && base.length && ad.length ? round(100 * (median(base) / median(ad) - 1), 1) : NaN;
        });
        // The same from each process's median step times (lock-stepped, the configurations' steps
        // share their seconds): a slow second inside one configuration's steps moves a run's rate,
        // not its median step (issue 17, twenty-second pass).
        const bySteps = rs.map((x) => {
          const base = x["decode_step_ms_median"] as number | undefined,
            ad = x[`decode_step_ms_median_${a}`] as number | undefined;
          return base && ad ? round(100 * (ad / base - 1), 1) : NaN;
        });
        return [
          a,
          {
            median_pct: round(median(by), 1),
            by_process_pct: by,
            median_step_pct: round(median(bySteps), 1),
            by_process_median_step_pct: bySteps,
          },
        ];
      }),
    );
  const checkpointBytes = statSync(join(dir, "model", "model.safetensors")).size;
  const embedBytes = shape.vocabSize * shape.hiddenSize * (o.dtype === "f32" ? 4 : 2);
  // A decode step reads every weight once except the embedding table (one row).
  const bytesPerToken = checkpointBytes - embedBytes;
  const membw = median(probe);
  const membwBest3 = native.readBandwidthGbs(PROBE_BYTES, 3);
  const first = (name: string, key: string) => results[name]?.[0]?.[key];
  const out = {
    model: {
      shape: shape.name,
      dtype: o.dtype,
      llamacpp_weights: gguf,
      checkpoint_bytes: checkpointBytes,
      prompt_tokens: promptLength,
      generated_tokens: generate,
      rounds,
      decode_runs_per_config: rounds * reps,
      decode_method: lockstepped
        ? `lockstep: in each engine process, ${reps} run(s) in which the base and every adapter each decode ${generate} tokens from the same prompt (the same KV positions), ${o.block === 1 ? "one step" : `${o.block} steps`} at a time in turn (cycles ABC CBA BCA …), so all configurations' steps fall in the same seconds; a run's rate is its decode steps over their summed time (each step's forward pass and the engine's work up to the next step); llama.cpp the same with one context per configuration; the engines' processes in ${rounds} rounds in ABBA order; decode_tok_s*: median over all runs`
        : `runs: in each engine process, ${reps} run(s) of each configuration of ${generate} tokens each, alternated (base r16 r128 / r128 r16 base …); the engines' processes in ${rounds} rounds; decode_tok_s*: median over all runs`,
      threads,
      cpu: cpuModel(),
      load_avg: round(median(loads)),
      // The page-cache state each load starts from (cpu-anchor-load.ts).
      load_ms_definition:
        "load_ms: median over rounds of the full worker's load, both engines' weight files evicted and then its own read through once (read()) just before; load_ms_cold: median over rounds of a load-only process started after evicting both engines' weight files (posix_fadvise DONTNEED)",
      // Every timed load in run order, with its weight file's resident fraction just before it.
      load_runs: loadRuns,
      // What each engine's load_ms covers (see PREFAULT above).
      load_ms_includes: {
        loramesh:
          PREFAULT === "sync"
            ? "header parse, mapping, and the weights made resident (LORAMESH_PREFAULT=sync)"
            : `header parse and mapping only (LORAMESH_PREFAULT=${PREFAULT}: pages come in during the first tokens)`,
        llamacpp: "GGUF mapped with MAP_POPULATE (weights resident), graph and buffers set up",
      },
      same_greedy_tokens: {
        base: agree(first("loramesh", "tokens"), first("llamacpp", "tokens")),
        r16: agree(first("loramesh", "tokens_r16"), first("llamacpp", "tokens_r16")),
        r128: agree(first("loramesh", "tokens_r128"), first("llamacpp", "tokens_r128")),
        of: generate,
      },
    },
    loramesh: summarize(results["loramesh"] ?? []),
    llamacpp: summarize(results["llamacpp"] ?? []),
    // Per engine process (in run order): its decode runs in order, and each adapter's step cost.
    decode_runs: { loramesh: runsOf(results["loramesh"] ?? []), llamacpp: runsOf(results["llamacpp"] ?? []) },
    adapter_step_cost: {
      method: "per engine process: median base rate ÷ median adapter rate − 1 (%); median over processes",
      method_median_step:
        "per engine process: median adapter step ÷ median base step − 1 (%), from decode_step_ms_median*; median over processes",
      loramesh: overheadOf(results["loramesh"] ?? []),
      llamacpp: overheadOf(results["llamacpp"] ?? []),
    },
    floor: {
      membw_gbs: round(membw),
      decode_tok_s: round((membw * 1e9) / bytesPerToken),
      membw_gbs_min: round(Math.min(...probe)),
      membw_gbs_max: round(Math.max(...probe)),
      membw_gbs_quartiles: [round(quantile(probe, 0.25)), round(quantile(probe, 0.75))],
      membw_passes: probe.length,
      // The median of each engine process's passes, in run order (the probe's drift over the run).
      membw_gbs_by_run: probeRuns.map((x) => round(x)),
      membw_method: `median of ${probe.length} passes (${PROBE_PASSES} after each engine process) of ${threads} threads each streaming its half of a fresh 1 GiB buffer, started together (wall clock)`,
      // The probe before issue 17's twelfth pass: best of 3 pool passes, once after all rounds.
      membw_gbs_best3: round(membwBest3),
      decode_tok_s_best3: round((membwBest3 * 1e9) / bytesPerToken),
    },
  };
  if (o.json) process.stdout.write(`${JSON.stringify(out)}\n`);
  else {
    process.stdout.write(
      `cpu-anchor: ${shape.name} ${o.dtype} on ${out.model.cpu}, ${threads} threads, load ${out.model.load_avg}\n`,
    );
    for (const k of KEYS)
      process.stdout.write(
        `  ${k.padEnd(18)} loramesh ${String(out.loramesh[k]).padStart(9)}   llama.cpp ${String(out.llamacpp[k]).padStart(9)}\n`,
      );
    process.stdout.write(
      `  floor: ${out.floor.membw_gbs} GB/s (median of ${out.floor.membw_passes} passes, ${out.floor.membw_gbs_min}–${out.floor.membw_gbs_max}) -> ${out.floor.decode_tok_s} tok/s decode; best of 3 at the end: ${out.floor.membw_gbs_best3} GB/s\n`,
    );
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`cpu-anchor: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
