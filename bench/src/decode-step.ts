/**
 * `pnpm bench:decode-step --model DIR [--adapter NAME=DIR ...] [--batch 1] [--steps 12] [--rounds 1] [--threads 0] [--floor] [--no-base] [--lockstep [--copies N] [--base-copies N]] [--json]`:
 * the time of one engine decode step (issue 13's native step), without and with each adapter.
 *
 * Prefills `batch` sequences of 64 tokens, then runs `steps` decode steps of one token per sequence
 * through `forward()`, timing each: wall milliseconds and process CPU milliseconds (user + system,
 * all threads). CPU time is the figure to compare on a shared machine: it counts the work the step
 * does, not the time other processes held the cores. Prints medians.
 *
 * `--rounds N`: the base and each adapter are measured N times, alternated (base, adapter 1, …,
 * base, adapter 1, …), each measurement on a fresh KV cache, and the medians are taken over the
 * steps of all rounds (same JSON keys; `rounds` says how many). One base run then one adapter run
 * let a drift of the machine's speed fall on one side only: on the 2-vCPU VM a single pair moved
 * r16's overhead by ±20 % between runs of the same code (docs/performance.md, issue 13).
 *
 * `--lockstep`: instead of rounds, the base and every adapter each get their own KV cache and are
 * stepped in turn, one step each per cycle, so all configurations share the same seconds of the
 * machine; prints each one's median step, and per adapter the median over cycles of its step minus
 * the base step of the same cycle (`lockstep.paired`). `--copies N` steps each adapter's sequence N
 * times a cycle: with an `=alt` switch of the native step (variant flipped every one-token step) and
 * N = 2, a cycle of base, adapter, adapter gives the adapter one step of each variant, in both
 * orders on alternate cycles; `lockstep.by_variant` splits the adapter's steps by variant (batch 1).
 * `--base-copies N` does the same for the base sequence (a change to the base step judged in one
 * process): keep the steps a cycle odd (e.g. `--base-copies 2` with one adapter) so the base copies
 * get the two variants in both orders; `lockstep.paired` then compares with their mean.
 *
 * `--floor`: after each base step, one pass of the read-bandwidth probe behind bench:cpu-anchor's
 * floor (the step's threads streaming their shares of 1 GiB; then one pass of the old pool probe,
 * reported beside it as membw_gbs_old), so the step's weight bytes per second and the floor are measured alternately in one
 * process (a ratio that holds better on a busy machine than two runs would). A step's weight bytes
 * are all the model's but the embedding table (one row of it is read), as cpu-anchor counts.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { forward, KvCache, LocalLoraBackend, loadAdapter, Model, type ForwardSequence } from "@loramesh/engine";
import { native } from "@loramesh/native";

interface Options {
  model: string;
  adapters: Array<[string, string]>;
  batch: number;
  steps: number;
  rounds: number;
  threads: number;
  floor: boolean;
  noBase: boolean;
  lockstep: boolean;
  copies: number;
  baseCopies: number;
  json: boolean;
}

function parseArgs(argv: readonly string[]): Options {
  const o: Options = {
    model: "",
    adapters: [],
    batch: 1,
    steps: 12,
    rounds: 1,
    threads: 0,
    floor: false,
    noBase: false,
    lockstep: false,
    copies: 1,
    baseCopies: 1,
    json: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    if (arg === "--model") o.model = value();
    else if (arg === "--adapter") {
      const [name, dir] = value().split("=");
      if (!name || !dir) throw new Error("--adapter takes NAME=DIR");
      o.adapters.push([name, dir]);
    } else if (arg === "--batch") o.batch = Number(value());
    else if (arg === "--steps") o.steps = Number(value());
    else if (arg === "--rounds") o.rounds = Number(value());
    else if (arg === "--threads") o.threads = Number(value());
    else if (arg === "--floor") o.floor = true;
    else if (arg === "--no-base") o.noBase = true;
    else if (arg === "--lockstep") o.lockstep = true;
    else if (arg === "--copies") o.copies = Number(value());
    else if (arg === "--base-copies") o.baseCopies = Number(value());
    else if (arg === "--json") o.json = true;
    else throw new Error(`unknown argument ${arg}`);
  }
  if (!o.model) throw new Error("--model DIR is required");
  if (!(o.batch >= 1 && o.steps >= 1 && Number.isInteger(o.rounds) && o.rounds >= 1))
    throw new Error("--batch, --steps and --rounds must be at least 1");
  if (!(Number.isInteger(o.copies) && o.copies >= 1)) throw new Error("--copies must be a whole number ≥ 1");
  if (!(Number.isInteger(o.baseCopies) && o.baseCopies >= 1))
    throw new Error("--base-copies must be a whole number ≥ 1");
  return o;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
const round = (x: number) => Math.round(x * 100) / 100;

/** Every timed step of one measurement (ms), and the floor probe's passes (GB/s) when asked. */
interface Samples {
  wall: number[];
  cpu: number[];
  probe: number[];
  probeOld: number[];
}

/** Medians over the steps of every round. */
function summary(rounds: Samples[]): {
  wall_ms: number;
  cpu_ms: number;
  probe_gbs?: number[];
  probe_old_gbs?: number[];
} {
  const all = (k: keyof Samples) => rounds.flatMap((r) => r[k]);
  const probe = all("probe"),
    probeOld = all("probeOld");
  return {
    wall_ms: round(median(all("wall"))),
    cpu_ms: round(median(all("cpu"))),
    ...(probe.length ? { probe_gbs: probe, probe_old_gbs: probeOld } : {}),
  };
}

async function measure(
  model: Model,
  lora: LocalLoraBackend,
  adapterId: string | undefined,
  o: Options,
): Promise<Samples> {
  const step = await sequence(model, lora, adapterId, o);
  const wall: number[] = [],
    cpu: number[] = [],
    probe: number[] = [],
    probeOld: number[] = [];
  for (let s = 0; s < o.steps; s++) {
    const c0 = process.cpuUsage(),
      t0 = performance.now();
    await step(s);
    const t1 = performance.now(),
      c1 = process.cpuUsage(c0);
    wall.push(t1 - t0);
    cpu.push((c1.user + c1.system) / 1000);
    if (o.floor && adapterId === undefined) {
      probe.push(native.readBandwidthPasses(1 << 30, 1, native.getNumThreads())[0] as number);
      probeOld.push(native.readBandwidthGbs(1 << 30, 1));
    }
  }
  return { wall, cpu, probe, probeOld };
}

/** One configuration's sequence of a lock-stepped run: its own cache, prefilled, stepped on demand. */
async function sequence(
  model: Model,
  lora: LocalLoraBackend,
  adapterId: string | undefined,
  o: Options,
): Promise<(s: number) => Promise<void>> {
  const prompt = 64;
  const c = model.config;
  const cache = new KvCache(c.numLayers, o.batch * Math.ceil((prompt + o.steps + 1) / 16), 16, c.numKvHeads, c.headDim);
  const tables = Array.from({ length: o.batch }, () => [] as number[]);
  for (const t of tables) cache.ensure(t, prompt + o.steps + 1);
  const seqs = (tokens: (b: number) => number[], start: number): ForwardSequence[] =>
    tables.map((blockTable, b) => ({ tokens: tokens(b), startPosition: start, blockTable, adapterId, logits: "last" }));
  await forward(
    model,
    cache,
    lora,
    seqs((b) => Array.from({ length: prompt }, (_, i) => 259 + ((i * 7919 + b) % 31000)), 0),
  );
  return async (s: number) => {
    await forward(
      model,
      cache,
      lora,
      seqs((b) => [300 + ((s * 31 + b) % 3000)], prompt + s),
    );
  };
}

/**
 * `--lockstep`: every configuration stepped in turn (base `baseCopies` times, then each adapter `copies` times), one
 * step each per cycle. The native step flips an `=alt` variant at every one-token step, counted
 * here the same way (prefills have more tokens and do not flip it).
 */
async function lockstep(
  model: Model,
  lora: LocalLoraBackend,
  adapters: ReadonlyArray<readonly [string, unknown]>,
  o: Options,
): Promise<Record<string, unknown>> {
  const configs: Array<{ name: string; id: string | undefined }> = [];
  if (!o.noBase) for (let c = 0; c < o.baseCopies; c++) configs.push({ name: "base", id: undefined });
  for (const [name] of adapters) for (let c = 0; c < o.copies; c++) configs.push({ name, id: name });
  const steppers = [];
  for (const c of configs) steppers.push(await sequence(model, lora, c.id, o));
  const wall = configs.map(() => [] as number[]);
  const cpu = configs.map(() => [] as number[]);
  const variant = configs.map(() => [] as number[]);
  let oneTokenSteps = 0;
  for (let s = 0; s < o.steps; s++) {
    for (let i = 0; i < configs.length; i++) {
      const c0 = process.cpuUsage(),
        t0 = performance.now();
      await (steppers[i] as (s: number) => Promise<void>)(s);
      const t1 = performance.now(),
        c1 = process.cpuUsage(c0);
      wall[i]?.push(t1 - t0);
      cpu[i]?.push((c1.user + c1.system) / 1000);
      if (o.batch === 1) oneTokenSteps++;
      variant[i]?.push(oneTokenSteps & 1);
    }
  }
  const names = [...new Set(configs.map((c) => c.name))];
  const idx = (name: string) => configs.flatMap((c, i) => (c.name === name ? [i] : []));
  const out: Record<string, unknown> = { steps: o.steps, order: configs.map((c) => c.name) };
  for (const name of names) {
    const is = idx(name);
    out[name] = {
      wall_ms: round(median(is.flatMap((i) => wall[i] ?? []))),
      cpu_ms: round(median(is.flatMap((i) => cpu[i] ?? []))),
    };
  }
  const baseIdxs = idx("base");
  if (baseIdxs.length > 0) {
    // Per cycle: the mean of the base copies' steps.
    const baseWall = (wall[baseIdxs[0] as number] ?? []).map(
      (_, s) => baseIdxs.reduce((sum, i) => sum + (wall[i]?.[s] ?? 0), 0) / baseIdxs.length,
    );
    const paired: Record<string, unknown> = {};
    for (const name of names.filter((n) => n !== "base")) {
      // Per cycle: the mean of the adapter's copies minus the base step of the same cycle.
      const added = baseWall.map(
        (b, s) => idx(name).reduce((sum, i) => sum + (wall[i]?.[s] ?? 0), 0) / idx(name).length - b,
      );
      const ratio = baseWall.map(
        (b, s) => idx(name).reduce((sum, i) => sum + (wall[i]?.[s] ?? 0), 0) / idx(name).length / b - 1,
      );
      paired[name] = {
        median_added_ms: round(median(added)),
        median_added_pct: round(100 * median(ratio)),
        median_step_pct: round(
          100 * (median(idx(name).flatMap((i) => wall[i] ?? [])) / median(baseIdxs.flatMap((i) => wall[i] ?? [])) - 1),
        ),
      };
    }
    out["paired"] = paired;
  }
  if (o.batch === 1) {
    const byVariant: Record<string, unknown> = {};
    for (const name of names) {
      const pick = (v: number) => idx(name).flatMap((i) => (wall[i] ?? []).filter((_, s) => variant[i]?.[s] === v));
      const v0 = pick(0),
        v1 = pick(1);
      // Within a cycle the copies of one adapter get both variants: their difference, cycle by cycle.
      const diffs: number[] = [];
      if (idx(name).length === 2) {
        const [a, b] = idx(name);
        for (let s = 0; s < o.steps; s++) {
          const wa = wall[a as number]?.[s] ?? 0,
            wb = wall[b as number]?.[s] ?? 0;
          diffs.push(variant[a as number]?.[s] === 1 ? wa - wb : wb - wa);
        }
      }
      byVariant[name] = {
        "0": { steps: v0.length, wall_ms: round(median(v0)) },
        "1": { steps: v1.length, wall_ms: round(median(v1)) },
        ...(diffs.length ? { median_1_minus_0_ms: round(median(diffs)) } : {}),
      };
    }
    out["by_variant"] = byVariant;
  }
  return out;
}

// Bytes a decode step reads: every weight but the embedding table (unless it is also the head).
const stepWeightBytes = (model: Model): number =>
  model.sizeBytes - (model.lmHead === model.embed ? 0 : model.embed.data.byteLength);

/** How much of this process's memory sits in 2 MiB page-table entries (smaps_rollup, KiB). */
function hugePageKib(): { rss_kib: number; file_pmd_kib: number; anon_huge_kib: number } | undefined {
  let text: string;
  try {
    text = readFileSync("/proc/self/smaps_rollup", "utf8");
  } catch {
    return undefined; // not Linux
  }
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
  return { rss_kib: field("Rss"), file_pmd_kib: field("FilePmdMapped"), anon_huge_kib: field("AnonHugePages") };
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (o.threads > 0) native.setNumThreads(o.threads);
  const model = Model.load(resolve(o.model));
  const lora = new LocalLoraBackend(model.config);
  const out: Record<string, unknown> = {
    model: resolve(o.model),
    batch: o.batch,
    steps: o.steps,
    threads: native.getNumThreads(),
  };
  // Each round measures the base, then every adapter, each on a fresh cache; --no-base: only the
  // adapters' steps, so LORAMESH_STEP_PROFILE's table is theirs alone.
  const adapters = o.adapters.map(([name, dir]) => [name, loadAdapter(resolve(dir), model.config)] as const);
  if (o.lockstep) {
    for (const [name, adapter] of adapters) lora.add(name, adapter);
    out["lockstep"] = await lockstep(model, lora, adapters, o);
    out["pages"] = hugePageKib();
    process.stdout.write(o.json ? `${JSON.stringify(out)}\n` : `${JSON.stringify(out, null, 2)}\n`);
    return;
  }
  const base: Samples[] = [];
  const per = new Map<string, Samples[]>(adapters.map(([name]) => [name, []]));
  for (let r = 0; r < o.rounds; r++) {
    if (!o.noBase) base.push(await measure(model, lora, undefined, o));
    for (const [name, adapter] of adapters) {
      lora.add(name, adapter);
      per.get(name)?.push(await measure(model, lora, name, o));
      lora.remove(name);
    }
  }
  if (o.rounds > 1) out["rounds"] = o.rounds;
  if (!o.noBase) out["base"] = summary(base);
  if (o.floor && !o.noBase) {
    // Weight GB/s of the median step against the median probe pass taken between the steps.
    const b = out["base"] as { wall_ms: number; probe_gbs?: number[]; probe_old_gbs?: number[] };
    const passes = b.probe_gbs ?? [];
    const membw = median(passes);
    const old = b.probe_old_gbs ?? [];
    delete b.probe_old_gbs;
    const stepGbs = stepWeightBytes(model) / (b.wall_ms * 1e6);
    delete b.probe_gbs;
    out["floor"] = {
      membw_gbs: round(membw),
      step_weight_gbs: round(stepGbs),
      decode_tok_s: round((membw * 1e9) / stepWeightBytes(model)),
      pct_of_floor: round((100 * stepGbs) / membw),
      membw_gbs_range: [round(Math.min(...passes)), round(Math.max(...passes))],
      // The pool probe's single passes (bench:cpu-anchor's floor before issue 17's twelfth pass).
      membw_gbs_old: round(median(old)),
      membw_gbs_old_range: [round(Math.min(...old)), round(Math.max(...old))],
    };
  }
  for (const [name] of adapters) out[name] = summary(per.get(name) ?? []);
  out["pages"] = hugePageKib();
  process.stdout.write(o.json ? `${JSON.stringify(out)}\n` : `${JSON.stringify(out, null, 2)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`decode-step: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
