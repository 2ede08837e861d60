/**
 * Overload benchmark (not a test): an open-loop arrival rate above what one worker serves, on one
 * local cluster (coupled, one worker, the bundled model), run twice: with the router's default
 * admission (no limits: everything queues somewhere) and with admission control (in-flight limit,
 * bounded queue, SLO refusal). Reports TTFT of completed requests, how many were shed
 * (RESOURCE_EXHAUSTED) and the throughput.
 *
 *   pnpm bench:overload [--rate 40] [--duration 20] [--tokens 128] [--max-in-flight 16] [--max-queued 16] [--slo-ttft-ms 1000] [--json]
 */
import { hostname, cpus } from "node:os";
import { BUNDLED_MODEL, startLocalCluster } from "@loramesh/cli";
import { booleanOption, createLogger, intOption, loadConfig, numberOption } from "@loramesh/core";
import { GrpcStatus, LoraMeshClient, LoraMeshClientError } from "@loramesh/sdk";

process.env["LOG_LEVEL"] ??= "error";

const options = {
  rate: numberOption({ flag: "rate", default: 40, min: 0.1, description: "arrivals per second (evenly spaced)" }),
  duration: numberOption({ flag: "duration", default: 20, min: 1, description: "seconds of arrivals" }),
  tokens: intOption({ flag: "tokens", default: 128, min: 1, description: "tokens generated per request" }),
  maxInFlight: intOption({
    flag: "max-in-flight",
    default: 16,
    min: 1,
    description: "router limit in the admission run",
  }),
  maxQueued: intOption({ flag: "max-queued", default: 16, min: 0, description: "queue bound in the admission run" }),
  sloTtftMs: intOption({
    flag: "slo-ttft-ms",
    default: 1_000,
    min: 1,
    description: "TTFT target in the admission run",
  }),
  json: booleanOption({ flag: "json", default: false, description: "print JSON instead of a table" }),
};

type Config = ReturnType<typeof loadConfig<typeof options>>["config"];

interface Outcome {
  ttftMs?: number;
  tokens: number;
  error?: "shed" | "other";
}

interface RunResult {
  run: string;
  routerFlags: string[];
  sent: number;
  completed: number;
  shed: number;
  otherErrors: number;
  ttftP50Ms: number;
  ttftP99Ms: number;
  peakInFlight: number;
  tokensPerS: number;
  wallS: number;
}

const quantile = (v: number[], q: number): number => {
  if (v.length === 0) return NaN;
  const s = [...v].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] as number;
};

async function one(client: LoraMeshClient, tokens: number): Promise<Outcome> {
  const start = performance.now();
  let ttftMs: number | undefined;
  let count = 0;
  try {
    const request = {
      prompt: { $case: "text" as const, value: "The quick brown fox jumps over the lazy dog" },
      adapter: "",
      sampling: { maxTokens: tokens, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true },
    };
    for await (const d of client.generate(request, { deadlineMs: 600_000 })) {
      if (d.tokenIds.length === 0) continue;
      ttftMs ??= performance.now() - start;
      count += d.tokenIds.length;
    }
    return { ...(ttftMs !== undefined ? { ttftMs } : {}), tokens: count };
  } catch (err) {
    const shed = err instanceof LoraMeshClientError && err.code === GrpcStatus.RESOURCE_EXHAUSTED;
    return { tokens: count, error: shed ? "shed" : "other" };
  }
}

async function run(name: string, routerFlags: string[], config: Config): Promise<RunResult> {
  const cluster = await startLocalCluster({
    routerListen: "127.0.0.1:0",
    modelDir: BUNDLED_MODEL,
    mode: "coupled",
    workers: 1,
    loraServers: 0,
    extraArgs: { router: routerFlags },
    logger: createLogger({ level: "error" }),
  });
  const client = new LoraMeshClient({ address: cluster.routerAddress });
  try {
    await one(client, 4); // warm-up: connections, JIT
    const total = Math.round(config.rate * config.duration);
    const interval = 1000 / config.rate;
    let inFlight = 0;
    let peak = 0;
    const t0 = performance.now();
    const pending: Promise<Outcome>[] = [];
    for (let i = 0; i < total; i++) {
      const due = t0 + i * interval;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      inFlight++;
      peak = Math.max(peak, inFlight);
      pending.push(
        one(client, config.tokens).finally(() => {
          inFlight--;
        }),
      );
    }
    const outcomes = await Promise.all(pending);
    const wallS = (performance.now() - t0) / 1000;
    const ok = outcomes.filter((o) => o.error === undefined);
    const ttft = ok.map((o) => o.ttftMs ?? NaN).filter((x) => Number.isFinite(x));
    return {
      run: name,
      routerFlags,
      sent: total,
      completed: ok.length,
      shed: outcomes.filter((o) => o.error === "shed").length,
      otherErrors: outcomes.filter((o) => o.error === "other").length,
      ttftP50Ms: quantile(ttft, 0.5),
      ttftP99Ms: quantile(ttft, 0.99),
      peakInFlight: peak,
      tokensPerS: outcomes.reduce((a, o) => a + o.tokens, 0) / wallS,
      wallS,
    };
  } finally {
    client.close();
    await cluster.stop();
  }
}

async function main(): Promise<void> {
  const { config } = loadConfig(options, process.argv.slice(2));
  const admission = [
    "--max-in-flight",
    String(config.maxInFlight),
    "--max-queued",
    String(config.maxQueued),
    "--slo-ttft-ms",
    String(config.sloTtftMs),
  ];
  const results = [await run("no admission (defaults)", [], config), await run("admission control", admission, config)];
  if (config.json) {
    process.stdout.write(`${JSON.stringify({ host: hostname(), cores: cpus().length, config, results }, null, 2)}\n`);
    return;
  }
  process.stdout.write(
    `# ${hostname()}, ${cpus().length} cores; ${config.rate} req/s for ${config.duration} s, ${config.tokens} tokens each, 1 coupled worker\n`,
  );
  process.stdout.write(
    "| run | router flags | sent | completed | shed (429) | other errors | TTFT p50 ms | TTFT p99 ms | peak in flight | tokens/s |\n|---|---|---|---|---|---|---|---|---|---|\n",
  );
  for (const r of results)
    process.stdout.write(
      `| ${r.run} | ${r.routerFlags.join(" ") || "—"} | ${r.sent} | ${r.completed} | ${r.shed} | ${r.otherErrors} | ${r.ttftP50Ms.toFixed(0)} | ${r.ttftP99Ms.toFixed(0)} | ${r.peakInFlight} | ${r.tokensPerS.toFixed(0)} |\n`,
    );
}

main().catch((err: unknown) => {
  process.stderr.write(`${String(err)}\n`);
  process.exit(1);
});
