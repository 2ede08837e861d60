import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { status } from "@grpc/grpc-js";
import {
  booleanOption,
  createLogger,
  enumOption,
  formatOptionsHelp,
  intOption,
  loadConfig,
  numberOption,
  stringOption,
} from "@loramesh/core";
import { InvalidArgumentError } from "@loramesh/errors";
import { DEFAULT_WORKLOAD, POLICY_NAMES, type WorkloadSpec } from "@loramesh/policy";
import { AdapterState } from "@loramesh/proto";
import { LoraMeshClient, LoraMeshClientError } from "@loramesh/sdk";
import type { Command } from "../command";
import { clientOptions, connection } from "../client-options";
import {
  mapAdapters,
  readAdapterSources,
  runLoad,
  searchServiceableRate,
  type LoadProgress,
  type LoadResult,
} from "../load-generator";
import { startLocalCluster, type LocalCluster } from "../local-cluster";
import { parseRanks } from "../workload-options";
import { BUNDLED_ADAPTERS, BUNDLED_MODEL } from "./up";

const options = {
  ...clientOptions,
  adapters: intOption({ flag: "adapters", default: 12, min: 1, max: 4096, description: "adapters in the workload" }),
  ranks: stringOption({
    flag: "ranks",
    default: "4,8,16,32,64",
    description: "ranks drawn uniformly, comma-separated (each maps to the source adapter of nearest rank)",
  }),
  zipf: numberOption({ flag: "zipf", default: 1.2, min: 0, description: "Zipf exponent of adapter popularity" }),
  rate: numberOption({ flag: "rate", default: 2, min: 0.01, description: "requests per second (Poisson)" }),
  duration: numberOption({ flag: "duration", default: 20, min: 1, description: "seconds of traffic per run" }),
  promptTokens: intOption({ flag: "prompt-tokens", default: 24, min: 1, description: "median prompt length" }),
  outputTokens: intOption({ flag: "output-tokens", default: 16, min: 1, description: "median output length" }),
  drift: numberOption({
    flag: "drift",
    default: 0,
    min: 0,
    max: 1,
    description: "fraction of the run after which the popular set changes (0: none)",
  }),
  seed: intOption({ flag: "seed", default: 1, min: 0, description: "random seed" }),
  sloTtftMs: intOption({ flag: "slo-ttft-ms", default: 1000, min: 1, description: "P95 time-to-first-token target" }),
  sloTpotMs: intOption({ flag: "slo-tpot-ms", default: 100, min: 1, description: "mean time-per-output-token target" }),
  adapterSource: stringOption({
    flag: "adapter-source",
    default: "",
    description: "directory of PEFT adapter folders the workload's adapters are registered from (default: bundled)",
  }),
  model: stringOption({
    flag: "model",
    default: "",
    description: "base model directory (prompt vocabulary; the model of --local); default: bundled",
  }),
  serviceable: booleanOption({
    flag: "serviceable",
    description: "search the highest rate meeting the SLO (doubling from --rate, then bisection)",
  }),
  bisections: intOption({ flag: "bisections", default: 3, min: 0, max: 10, description: "bisection steps" }),
  local: booleanOption({ flag: "local", description: "start a local cluster for the run instead of using --router" }),
  mode: enumOption({
    flag: "mode",
    default: "disaggregated",
    values: ["coupled", "disaggregated", "hybrid"] as const,
    description: "LoRA mode of the --local cluster",
  }),
  workers: intOption({ flag: "workers", default: 1, min: 1, max: 64, description: "base workers (--local)" }),
  loraServers: intOption({ flag: "lora-servers", default: 1, min: 0, max: 64, description: "LoRA servers (--local)" }),
  placementPolicy: enumOption({
    flag: "placement-policy",
    default: "rank-aware+rebalancing",
    values: POLICY_NAMES,
    description: "provisioner placement policy (--local)",
  }),
  json: booleanOption({ flag: "json", description: "print one JSON object" }),
  perRequest: booleanOption({
    flag: "per-request",
    description: "with --json: add each completed request's TTFT, TPOT and tokens (`requests`)",
  }),
};

/** `loramesh bench load`: the load generator against a real mesh. */
export const benchCommand: Command = {
  name: "bench",
  summary: "bench load: Poisson/Zipf load against a running mesh (TTFT, TPOT, SLO, serviceable rate)",
  help: () =>
    `Usage: loramesh bench load [options] [--json]\n\nRegisters --adapters adapters (load-a0000, ...) from --adapter-source, sends Poisson arrivals with\nZipf popularity through the router (streaming, open loop) and reports TTFT and TPOT P50/P95/P99,\nSLO attainment overall and per adapter, throughput, and with --serviceable the highest rate that\nmeets the SLO. Progress goes to stderr while it runs.\n\nOptions:\n${formatOptionsHelp(options)}\n`,
  async run(argv) {
    const [sub, ...rest] = argv;
    if (sub !== "load") throw new InvalidArgumentError(`unknown bench ${JSON.stringify(sub ?? "")}; use: bench load`);
    const { config } = loadConfig(options, rest);
    const ranks = parseRanks(config.ranks);
    const modelDir = config.model === "" ? BUNDLED_MODEL : resolve(config.model);
    const sourceDir = config.adapterSource === "" ? BUNDLED_ADAPTERS : resolve(config.adapterSource);
    const vocabSize = readVocabSize(modelDir);
    const sources = readAdapterSources(sourceDir);
    const workload: WorkloadSpec = {
      ...DEFAULT_WORKLOAD,
      adapters: config.adapters,
      ranks,
      zipf: config.zipf,
      rate: config.rate,
      duration: config.duration,
      promptMedian: config.promptTokens,
      outputMedian: config.outputTokens,
      lengthSigma: 0.4,
      ...(config.drift > 0 ? { driftAt: config.drift } : {}),
      seed: config.seed,
    };

    let cluster: LocalCluster | undefined;
    let client: LoraMeshClient | undefined;
    try {
      if (config.local) {
        process.stderr.write(`bench load: starting a local ${config.mode} cluster\n`);
        cluster = await startLocalCluster({
          routerListen: "127.0.0.1:0",
          modelDir,
          mode: config.mode,
          workers: config.workers,
          loraServers: config.mode === "coupled" ? 0 : Math.max(1, config.loraServers),
          extraArgs: { provisioner: ["--placement-policy", config.placementPolicy] },
          // The services' own logs would bury the report; warnings still show.
          env: { ...process.env, LOG_LEVEL: process.env["LOG_LEVEL"] ?? "warn" },
          logger: createLogger({ level: "warn", fields: { service: "bench" } }),
        });
      }
      client = new LoraMeshClient(
        cluster ? { address: cluster.routerAddress } : connection({ router: config.router, apiKey: config.apiKey }),
      );
      const names = mapAdapters(workload, sources);
      // One mesh adapter per workload adapter: load-a0000 is registered from the source of nearest rank.
      const meshNames = new Map<string, string>();
      for (const id of names.keys()) meshNames.set(id, `load-${id}`);
      await registerAdapters(client, meshNames, names, sourceDir);

      const slo = { ttftMs: config.sloTtftMs, tpotMs: config.sloTpotMs };
      const probe = async (rate: number): Promise<LoadResult> =>
        runLoad({
          client: client as LoraMeshClient,
          workload: { ...workload, rate },
          adapterNames: meshNames,
          vocabSize,
          slo,
          perRequest: config.perRequest,
          onProgress: progressPrinter(rate),
        });
      const header = {
        router: cluster ? cluster.routerAddress : config.router,
        local: config.local
          ? {
              mode: config.mode,
              workers: config.workers,
              loraServers: config.loraServers,
              placementPolicy: config.placementPolicy,
            }
          : null,
        workload: {
          adapters: workload.adapters,
          ranks,
          zipf: workload.zipf,
          duration: workload.duration,
          promptMedian: workload.promptMedian,
          outputMedian: workload.outputMedian,
          drift: workload.driftAt ?? null,
          seed: workload.seed,
        },
        slo,
      };
      if (config.serviceable) {
        const search = await searchServiceableRate(probe, config.rate, config.bisections, (r) =>
          process.stderr.write(
            `bench load: ${r.rate.toFixed(2)} req/s → TTFT p95 ${r.ttftMs.p95.toFixed(0)} ms, mean TPOT ${r.tpotMs.mean.toFixed(1)} ms, errors ${r.errors}: ${r.meetsSlo ? "meets" : "misses"} the SLO\n`,
          ),
        );
        const best = search.probes.filter((p) => p.meetsSlo).sort((a, b) => b.rate - a.rate)[0];
        if (config.json) {
          process.stdout.write(
            `${JSON.stringify({ ...header, serviceableRate: search.rate, atServiceableRate: best ?? null, probes: search.probes })}\n`,
          );
        } else {
          process.stdout.write(`serviceable rate ${search.rate.toFixed(2)} req/s (${search.probes.length} runs)\n`);
          if (best) process.stdout.write(formatResult(best));
        }
        return 0;
      }
      const result = await probe(config.rate);
      process.stdout.write(config.json ? `${JSON.stringify({ ...header, ...result })}\n` : formatResult(result));
      return 0;
    } finally {
      client?.close();
      await cluster?.stop();
    }
  },
};

function readVocabSize(modelDir: string): number {
  try {
    const config = JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8")) as { vocab_size?: number };
    if (typeof config.vocab_size === "number") return config.vocab_size;
  } catch {
    // reported below
  }
  throw new InvalidArgumentError(`cannot read vocab_size from ${join(modelDir, "config.json")}`);
}

/** Registers the workload's adapters (an existing one is reused) and waits until each is READY. */
async function registerAdapters(
  client: LoraMeshClient,
  meshNames: ReadonlyMap<string, string>,
  sources: ReadonlyMap<string, string>,
  sourceDir: string,
): Promise<void> {
  const pending = [...meshNames.entries()];
  process.stderr.write(`bench load: registering ${pending.length} adapters\n`);
  const worker = async (): Promise<void> => {
    for (let next = pending.shift(); next; next = pending.shift()) {
      const [id, name] = next;
      try {
        await client.registerAdapter(name, join(sourceDir, sources.get(id) as string));
      } catch (err) {
        if (!(err instanceof LoraMeshClientError && err.code === status.ALREADY_EXISTS)) throw err;
      }
      for await (const _ of client.watchAdapterLoad(name)) void _;
      const adapter = await client.getAdapter(name);
      if (adapter.state !== AdapterState.ADAPTER_STATE_READY)
        throw new InvalidArgumentError(`adapter ${name} did not become ready: ${adapter.error || adapter.state}`);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
}

function progressPrinter(rate: number): (p: LoadProgress) => void {
  return (p) => {
    const line = `bench load: ${rate.toFixed(2)} req/s, ${p.elapsedS.toFixed(0)}/${p.durationS} s, sent ${p.sent}, done ${p.done}, errors ${p.errors}, in flight ${p.inFlight}`;
    if (process.stderr.isTTY) process.stderr.write(`\r${line}\x1b[K`);
    else if (Math.round(p.elapsedS) % 5 === 0) process.stderr.write(`${line}\n`);
  };
}

function formatResult(r: LoadResult): string {
  const lines = [
    `rate ${r.rate.toFixed(2)} req/s for ${r.durationS.toFixed(1)} s: sent ${r.sent}, completed ${r.completed}, errors ${r.errors}`,
    `TTFT ms p50/p95/p99 ${r.ttftMs.p50.toFixed(1)} / ${r.ttftMs.p95.toFixed(1)} / ${r.ttftMs.p99.toFixed(1)}`,
    `TPOT ms p50/p95/p99 ${r.tpotMs.p50.toFixed(2)} / ${r.tpotMs.p95.toFixed(2)} / ${r.tpotMs.p99.toFixed(2)} (mean ${r.tpotMs.mean.toFixed(2)})`,
    `throughput ${r.throughputTokensPerSecond.toFixed(1)} tokens/s, ${r.requestsPerSecond.toFixed(2)} req/s`,
    `SLO attainment ${(r.sloAttainment * 100).toFixed(1)} %, adapters meeting it ${(r.adaptersMeetingSlo * 100).toFixed(1)} % — ${r.meetsSlo ? "meets" : "misses"} the SLO`,
    ...(r.phases
      ? [
          `before drift: TTFT p95 ${r.phases.before.ttftP95.toFixed(1)} ms, attainment ${(r.phases.before.attainment * 100).toFixed(1)} %`,
          `after drift:  TTFT p95 ${r.phases.after.ttftP95.toFixed(1)} ms, attainment ${(r.phases.after.attainment * 100).toFixed(1)} %`,
        ]
      : []),
    "per adapter:",
    ...Object.entries(r.perAdapter)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(
        ([name, s]) =>
          `  ${name.padEnd(16)} ${String(s.requests).padStart(5)} requests, attainment ${(s.attainment * 100).toFixed(1).padStart(5)} %, TTFT p95 ${s.ttftP95Ms.toFixed(1)} ms`,
      ),
    ...(r.errorSamples.length > 0 ? ["errors:", ...r.errorSamples.map((e) => `  ${e}`)] : []),
    "",
  ];
  return `${lines.join("\n")}`;
}
