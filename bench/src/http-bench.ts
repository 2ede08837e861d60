/**
 * HTTP API benchmark (not a test): per-token overhead of the router's OpenAI-compatible HTTP+SSE
 * streaming against its gRPC streaming, on one local cluster (coupled, one worker, the bundled
 * model, base weights), at 1 and 32 concurrent streams. Rounds alternate the two transports so
 * drift on a shared machine hits both alike.
 *
 *   pnpm bench:http [--tokens N] [--rounds N] [--concurrency 1,32]
 */
import { Agent, request, type IncomingMessage } from "node:http";
import { readFileSync } from "node:fs";
import { hostname, cpus } from "node:os";
import { BUNDLED_MODEL, startLocalCluster, type LocalCluster } from "@loramesh/cli";
import { createLogger, intOption, loadConfig, stringOption } from "@loramesh/core";
import { LoraMeshClient } from "@loramesh/sdk";

process.env["LOG_LEVEL"] ??= "error";
const PROMPT = "The quick brown fox jumps over the lazy dog";

const options = {
  tokens: intOption({ flag: "tokens", default: 64, min: 2, description: "tokens generated per stream" }),
  rounds: intOption({
    flag: "rounds",
    default: 5,
    min: 1,
    description: "alternating rounds per transport and concurrency",
  }),
  concurrency: stringOption({
    flag: "concurrency",
    default: "1,32",
    description: "concurrent streams, comma-separated",
  }),
};

/** What one stream saw at the client: time to first token and the mean gap between later tokens. */
interface StreamTiming {
  ttftMs: number;
  tpotMs: number;
  tokens: number;
}

function timing(start: number, arrivals: number[], tokens: number): StreamTiming {
  const first = arrivals[0] ?? performance.now();
  const last = arrivals[arrivals.length - 1] ?? first;
  return { ttftMs: first - start, tpotMs: tokens > 1 ? (last - first) / (tokens - 1) : 0, tokens };
}

async function grpcStream(client: LoraMeshClient, tokens: number): Promise<StreamTiming> {
  const start = performance.now();
  const arrivals: number[] = [];
  let count = 0;
  const request = {
    prompt: { $case: "text" as const, value: PROMPT },
    adapter: "",
    sampling: { maxTokens: tokens, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true },
  };
  for await (const delta of client.generate(request)) {
    if (delta.tokenIds.length === 0) continue;
    count += delta.tokenIds.length;
    for (let i = 0; i < delta.tokenIds.length; i++) arrivals.push(performance.now());
  }
  return timing(start, arrivals, count);
}

/** Keep-alive connections, as an OpenAI client keeps them. */
const agent = new Agent({ keepAlive: true, maxSockets: 64 });

/** Posts a JSON body and resolves with the response stream (node:http, to time the server rather than a fetch stack). */
function post(baseUrl: string, path: string, body: object): Promise<IncomingMessage> {
  const url = new URL(`${baseUrl}${path}`);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: "POST",
        agent,
        headers: { "content-type": "application/json" },
      },
      resolve,
    );
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

async function httpStream(baseUrl: string, tokens: number): Promise<StreamTiming> {
  const start = performance.now();
  const res = await post(baseUrl, "/completions", {
    model: "tiny-llama",
    prompt: PROMPT,
    max_tokens: tokens,
    temperature: 0,
    ignore_eos: true,
    stream: true,
  });
  if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode}`);
  res.setEncoding("utf8");
  const arrivals: number[] = [];
  let buffered = "";
  for await (const chunk of res as AsyncIterable<string>) {
    buffered += chunk;
    let end: number;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      if (event === "data: [DONE]") continue;
      const data = JSON.parse(event.slice(6)) as { choices: Array<{ text: string }> };
      // One chunk per token that produced text; the finish chunk carries none.
      if (data.choices.some((c) => c.text !== "")) arrivals.push(performance.now());
    }
  }
  return timing(start, arrivals, arrivals.length);
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)] as number;

interface Row {
  transport: string;
  concurrency: number;
  ttftMs: number[];
  tpotMs: number[];
  tokensPerS: number[];
  tokens: number;
  /** CPU time of the router process and of this (client) process over all rounds, µs. */
  routerCpuUs: number;
  clientCpuUs: number;
}

const newRow = (transport: string, concurrency: number): Row => ({
  transport,
  concurrency,
  ttftMs: [],
  tpotMs: [],
  tokensPerS: [],
  tokens: 0,
  routerCpuUs: 0,
  clientCpuUs: 0,
});

/** User + system CPU time of a process, µs (Linux /proc; clock ticks of 10 ms). */
function processCpuUs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

async function round(row: Row, routerPid: number, run: () => Promise<StreamTiming>): Promise<void> {
  const t0 = performance.now();
  const router0 = processCpuUs(routerPid);
  const client0 = process.cpuUsage();
  const streams = await Promise.all(Array.from({ length: row.concurrency }, run));
  const seconds = (performance.now() - t0) / 1000;
  const client = process.cpuUsage(client0);
  row.routerCpuUs += processCpuUs(routerPid) - router0;
  row.clientCpuUs += client.user + client.system;
  row.ttftMs.push(...streams.map((s) => s.ttftMs));
  row.tpotMs.push(...streams.map((s) => s.tpotMs));
  const tokens = streams.reduce((a, s) => a + s.tokens, 0);
  row.tokens += tokens;
  row.tokensPerS.push(tokens / seconds);
}

async function measure(
  cluster: LocalCluster,
  config: { tokens: number; rounds: number; concurrency: string },
): Promise<Row[]> {
  const client = new LoraMeshClient({ address: cluster.routerAddress });
  const baseUrl = `http://${cluster.httpAddress}/v1`;
  const routerPid = cluster.processes.find((p) => p.service === "router")?.pid as number;
  const rows: Row[] = [];
  try {
    // Warm both paths (connections, JIT) before timing.
    await grpcStream(client, 4);
    await httpStream(baseUrl, 4);
    for (const c of config.concurrency.split(",").map(Number)) {
      const grpc = newRow("gRPC stream", c);
      const http = newRow("HTTP+SSE", c);
      for (let r = 0; r < config.rounds; r++) {
        await round(grpc, routerPid, () => grpcStream(client, config.tokens));
        await round(http, routerPid, () => httpStream(baseUrl, config.tokens));
      }
      rows.push(grpc, http);
    }
  } finally {
    client.close();
    agent.destroy();
  }
  return rows;
}

async function main(): Promise<void> {
  const { config } = loadConfig(options, process.argv.slice(2));
  const cluster = await startLocalCluster({
    routerListen: "127.0.0.1:0",
    modelDir: BUNDLED_MODEL,
    mode: "coupled",
    workers: 1,
    loraServers: 0,
    logger: createLogger({ level: "error" }),
  });
  try {
    const rows = await measure(cluster, config);
    process.stdout.write(
      `# ${hostname()}, ${cpus().length} cores, ${config.tokens} tokens per stream, ${config.rounds} rounds\n`,
    );
    process.stdout.write(
      "| transport | streams | TTFT ms (median) | TPOT ms (median) | tokens/s (median) | router CPU µs/token | client CPU µs/token |\n|---|---|---|---|---|---|---|\n",
    );
    for (const r of rows)
      process.stdout.write(
        `| ${r.transport} | ${r.concurrency} | ${median(r.ttftMs).toFixed(2)} | ${median(r.tpotMs).toFixed(3)} | ${median(r.tokensPerS).toFixed(0)} | ${(r.routerCpuUs / r.tokens).toFixed(0)} | ${(r.clientCpuUs / r.tokens).toFixed(0)} |\n`,
      );
    for (let i = 0; i + 1 < rows.length; i += 2) {
      const g = rows[i] as Row;
      const h = rows[i + 1] as Row;
      const perToken = (median(h.tpotMs) - median(g.tpotMs)) * 1000;
      const routerCpu = h.routerCpuUs / h.tokens - g.routerCpuUs / g.tokens;
      process.stdout.write(
        `overhead at ${g.concurrency} streams: ${perToken.toFixed(0)} µs per token of client-seen TPOT, ${routerCpu.toFixed(0)} µs of router CPU per token (HTTP+SSE − gRPC)\n`,
      );
    }
  } finally {
    await cluster.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${String(err)}\n`);
  process.exit(1);
});
