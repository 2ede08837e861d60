/**
 * Prefix-cache benchmark (not a test): time to first token of requests that share a 512-token
 * system prompt, through a real disaggregated mesh (router, provisioner, base worker, LoRA server
 * as processes), for the base model and an adapter. Per trial a fresh random system prompt is sent
 * twice with different user turns: the first request is cold, the second finds the prefix cached.
 * The same trials run against a cluster started with the prefix cache off.
 *
 *   pnpm bench:prefix-cache [--json] [--quick] [--trials N] [--system-tokens N]
 *
 * `--quick` is a smoke run (1 trial unless --trials is given) that shows the bench works.
 *
 * The bundled tiny-llama allows 512 positions, so the bench copies it to a temporary directory with
 * max_position_embeddings raised to 2048 (RoPE needs nothing else); the weights are the same.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, hostname, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { BUNDLED_ADAPTERS, BUNDLED_MODEL, startLocalCluster } from "@loramesh/cli";
import { booleanOption, createLogger, intOption, loadConfig } from "@loramesh/core";
import { LoraMeshClient } from "@loramesh/sdk";

const quiet = createLogger({ level: "error" });
process.env["LOG_LEVEL"] ??= "error";
const ADAPTER = "chat-r16-all";

const options = {
  json: booleanOption({ flag: "json", default: false, description: "print one JSON object instead of tables" }),
  quick: booleanOption({ flag: "quick", default: false, description: "smoke run: 1 trial unless --trials is given" }),
  trials: intOption({ flag: "trials", default: 8, min: 1, description: "fresh system prompts per key" }),
  systemTokens: intOption({ flag: "system-tokens", default: 512, min: 16, description: "system prompt length" }),
};

interface Samples {
  cold: number[];
  cached: number[];
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

/** Deterministic pseudo-random token ids (no special tokens). */
function tokens(seed: number, n: number): number[] {
  let x = seed * 2654435761 + 1;
  return Array.from({ length: n }, () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return 3 + (x % 500);
  });
}

function longModel(): string {
  const dir = mkdtempSync(join(tmpdir(), "lm-prefix-bench-"));
  cpSync(BUNDLED_MODEL, dir, { recursive: true });
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  config["max_position_embeddings"] = 2048;
  writeFileSync(join(dir, "config.json"), JSON.stringify(config, null, 2));
  return dir;
}

async function ttft(client: LoraMeshClient, adapter: string, promptIds: number[]): Promise<number> {
  const t0 = performance.now();
  const stream = client.generate({
    prompt: { $case: "tokenIds", value: { ids: promptIds } },
    adapter,
    sampling: { maxTokens: 4, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true },
  });
  let first: number | undefined;
  for await (const delta of stream) if (first === undefined && delta.tokenIds.length > 0) first = performance.now();
  return (first ?? performance.now()) - t0;
}

/** Prometheus text of the worker: the prefix-cache hit-token counters per adapter. */
async function hitRates(metricsAddress: string): Promise<Record<string, number>> {
  const text = await (await fetch(`http://${metricsAddress}/metrics`)).text();
  const read = (name: string): Map<string, number> => {
    const out = new Map<string, number>();
    for (const m of text.matchAll(new RegExp(`^${name}\\{adapter="([^"]*)"[^}]*\\} ([0-9.e+]+)`, "gm")))
      out.set(m[1] as string, Number(m[2]));
    return out;
  };
  const hits = read("loramesh_prefix_cache_hit_tokens_total");
  const queried = read("loramesh_prefix_cache_queried_tokens_total");
  return Object.fromEntries([...queried].map(([a, q]) => [a, q > 0 ? (hits.get(a) ?? 0) / q : 0]));
}

async function runCluster(
  modelDir: string,
  prefixCache: boolean,
  trials: number,
  systemTokens: number,
): Promise<{ samples: Record<string, Samples>; hitRate: Record<string, number> }> {
  const cluster = await startLocalCluster({
    routerListen: "127.0.0.1:0",
    modelDir,
    mode: "disaggregated",
    workers: 1,
    loraServers: 1,
    logger: quiet,
    // The machine may be busy with other work; a slow start is not what is measured.
    startTimeoutMs: 300_000,
    env: { ...process.env, LORAMESH_PREFIX_CACHE: String(prefixCache) },
  });
  const client = new LoraMeshClient({ address: cluster.routerAddress, defaultDeadlineMs: 600_000 });
  try {
    await client.registerAdapter(ADAPTER, join(BUNDLED_ADAPTERS, ADAPTER));
    for await (const _ of client.watchAdapterLoad(ADAPTER)) void _;
    const samples: Record<string, Samples> = { base: { cold: [], cached: [] }, [ADAPTER]: { cold: [], cached: [] } };
    await ttft(client, "", tokens(999, 64)); // warm-up (connections, first native calls)
    for (let t = 0; t < trials; t++) {
      for (const adapter of ["", ADAPTER]) {
        const system = tokens(t * 7 + (adapter ? 3 : 1), systemTokens);
        const s = samples[adapter || "base"] as Samples;
        s.cold.push(await ttft(client, adapter, [1, ...system, ...tokens(t + 100, 16)]));
        s.cached.push(await ttft(client, adapter, [1, ...system, ...tokens(t + 200, 16)]));
      }
    }
    const worker = cluster.processes.find((p) => p.service === "base-worker");
    const hitRate = worker?.metricsAddress ? await hitRates(worker.metricsAddress) : {};
    return { samples, hitRate };
  } finally {
    client.close();
    await cluster.stop();
  }
}

async function main(): Promise<void> {
  const { config } = loadConfig(options, process.argv.slice(2));
  const trialsGiven = process.argv.some((a) => a === "--trials" || a.startsWith("--trials="));
  const trials = config.quick && !trialsGiven ? 1 : config.trials;
  const load = loadavg()[0] ?? 0;
  const modelDir = longModel();
  try {
    const on = await runCluster(modelDir, true, trials, config.systemTokens);
    const off = await runCluster(modelDir, false, trials, config.systemTokens);
    const rows = Object.keys(on.samples).map((key) => {
      const a = on.samples[key] as Samples;
      const b = off.samples[key] as Samples;
      return {
        key,
        coldMs: median(a.cold),
        cachedMs: median(a.cached),
        cacheOffRepeatMs: median(b.cached),
        speedup: median(a.cold) / median(a.cached),
        // The worker labels adapters by internal id (tenant.name.hash).
        hitRate: Object.entries(on.hitRate).find(([label]) => label === key || label.includes(`.${key}.`))?.[1] ?? 0,
      };
    });
    const meta = {
      host: hostname(),
      cores: cpus().length,
      node: process.version,
      trials,
      loadavg1mAtStart: Number(load.toFixed(2)),
      systemTokens: config.systemTokens,
      userTokens: 16,
      model: "tiny-llama (max_position_embeddings 2048)",
      mode: "disaggregated, 1 worker, 1 LoRA server",
    };
    if (config.json) {
      process.stdout.write(`${JSON.stringify({ ...meta, rows })}\n`);
      return;
    }
    console.log(
      `# prefix cache: TTFT of a repeated ${config.systemTokens}-token system prompt + 16-token user turn (median of ${trials}) — ${meta.host}, ${meta.cores} cores, load ${meta.loadavg1mAtStart} at start\n`,
    );
    console.log("| key | cold ms | cached ms | cold / cached | repeat with cache off ms | worker hit rate |");
    console.log("|---|---|---|---|---|---|");
    for (const r of rows)
      console.log(
        `| ${r.key} | ${r.coldMs.toFixed(1)} | ${r.cachedMs.toFixed(1)} | ${r.speedup.toFixed(2)}x | ${r.cacheOffRepeatMs.toFixed(1)} | ${(r.hitRate * 100).toFixed(0)}% |`,
      );
  } finally {
    rmSync(modelDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
