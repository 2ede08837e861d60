/**
 * Where a request's time to first token goes on the real mesh: starts a local cluster, sends the
 * validation workload (`bench load`'s defaults, same seed) and records, per request, the client's
 * TTFT, the router's TTFT (arrival at the router → first delta it relays, from the last message's
 * timings), the worker's queue time, and how many requests were in flight when it was sent. The
 * differences split the TTFT into client↔router transport, admission + submit + first-token relay
 * inside the router, and time on the worker.
 *
 *   pnpm bench:trace-ttft [--mode coupled|disaggregated|hybrid] [--rate R] [--duration S] [--json]
 */
import { join } from "node:path";
import { createLogger } from "@loramesh/core";
import { BUNDLED_ADAPTERS, BUNDLED_MODEL, startLocalCluster } from "@loramesh/cli";
import {
  DEFAULT_WORKLOAD,
  makeAdapters,
  makeRequests,
  percentile,
  SeededRandom,
  type WorkloadSpec,
} from "@loramesh/policy";
import { LoraMeshClient } from "@loramesh/sdk";

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const mode = (flag("--mode") ?? "coupled") as "coupled" | "disaggregated" | "hybrid";
const rate = Number(flag("--rate") ?? 4);
const duration = Number(flag("--duration") ?? 12);

interface Trace {
  arrivalS: number;
  promptTokens: number;
  inFlightAtSend: number;
  clientTtftMs: number;
  routerTtftMs: number;
  workerQueueMs: number;
}

const workload: WorkloadSpec = {
  ...DEFAULT_WORKLOAD,
  adapters: 12,
  ranks: [4, 8, 16, 32, 64],
  zipf: 1.2,
  rate,
  duration,
  promptMedian: 24,
  outputMedian: 16,
  lengthSigma: 0.4,
  seed: 1,
};

async function main(): Promise<void> {
  const cluster = await startLocalCluster({
    routerListen: "127.0.0.1:0",
    modelDir: BUNDLED_MODEL,
    mode,
    workers: 1,
    loraServers: mode === "coupled" ? 0 : 1,
    extraArgs: { provisioner: ["--placement-policy", "rank-aware"] },
    env: { ...process.env, LOG_LEVEL: "warn" },
    logger: createLogger({ level: "warn", fields: { service: "trace" } }),
  });
  const client = new LoraMeshClient({ address: cluster.routerAddress });
  try {
    const adapters = makeAdapters(workload);
    // As `bench load` maps them: each workload adapter from the bundled source of nearest rank.
    const sources: Array<[string, number]> = [
      ["big-r64", 64],
      ["chat-r16-all", 16],
      ["math-r4-mlp", 4],
      ["pattern-r8", 8],
      ["rslora-r32", 32],
    ];
    for (const a of adapters) {
      const [name] = [...sources].sort((x, y) => Math.abs(x[1] - a.rank) - Math.abs(y[1] - a.rank))[0] as [
        string,
        number,
      ];
      await client.registerAdapter(`t-${a.id}`, join(BUNDLED_ADAPTERS, name));
      for await (const _ of client.watchAdapterLoad(`t-${a.id}`)) void _;
    }
    const requests = makeRequests(workload, adapters);
    const rng = new SeededRandom(workload.seed * 31 + 7);
    const prompts = requests.map((r) => Array.from({ length: r.promptTokens }, () => rng.int(3, 256)));
    const traces: Trace[] = [];
    let inFlight = 0;
    const start = performance.now();
    await Promise.all(
      requests.map(async (r, i) => {
        const wait = r.arrival * 1000 - (performance.now() - start);
        if (wait > 0) await new Promise((res) => setTimeout(res, wait));
        const inFlightAtSend = inFlight++;
        const t0 = performance.now();
        let first = 0;
        let routerTtftMs = 0;
        let workerQueueMs = 0;
        for await (const d of client.generate({
          prompt: { $case: "tokenIds", value: { ids: prompts[i] as number[] } },
          adapter: `t-${r.adapter}`,
          sampling: {
            maxTokens: r.outputTokens,
            temperature: 0,
            topP: 1,
            topK: 0,
            stop: [],
            stopTokenIds: [],
            ignoreEos: true,
            minTokens: r.outputTokens,
          },
        })) {
          if (d.tokenIds.length > 0 && first === 0) first = performance.now();
          if (d.timings) {
            routerTtftMs = d.timings.timeToFirstTokenMs;
            workerQueueMs = d.timings.queueMs;
          }
        }
        inFlight--;
        traces.push({
          arrivalS: r.arrival,
          promptTokens: r.promptTokens,
          inFlightAtSend,
          clientTtftMs: first - t0,
          routerTtftMs,
          workerQueueMs,
        });
      }),
    );
    report(traces);
  } finally {
    client.close();
    await cluster.stop();
  }
}

function report(traces: Trace[]): void {
  const col = (f: (t: Trace) => number): { p50: number; p95: number; mean: number } => {
    const v = traces.map(f).sort((a, b) => a - b);
    return { p50: percentile(v, 50), p95: percentile(v, 95), mean: v.reduce((s, x) => s + x, 0) / v.length };
  };
  const byLoad = (idle: boolean): Trace[] => traces.filter((t) => (t.inFlightAtSend === 0) === idle);
  const split = (list: Trace[]) => {
    const m = (f: (t: Trace) => number): number => list.reduce((s, t) => s + f(t), 0) / Math.max(1, list.length);
    return {
      n: list.length,
      clientTtftMs: m((t) => t.clientTtftMs),
      clientToRouterMs: m((t) => t.clientTtftMs - t.routerTtftMs),
      routerTtftMs: m((t) => t.routerTtftMs),
      workerQueueMs: m((t) => t.workerQueueMs),
    };
  };
  const out = {
    mode,
    rate,
    duration,
    clientTtftMs: col((t) => t.clientTtftMs),
    routerTtftMs: col((t) => t.routerTtftMs),
    clientMinusRouterMs: col((t) => t.clientTtftMs - t.routerTtftMs),
    workerQueueMs: col((t) => t.workerQueueMs),
    sentToIdleMesh: split(byLoad(true)),
    sentToBusyMesh: split(byLoad(false)),
    traces: args.includes("--traces") ? traces : undefined,
  };
  process.stdout.write(`${JSON.stringify(out, null, args.includes("--json") ? 0 : 2)}\n`);
}

void main().catch((err: unknown) => {
  process.stderr.write(`trace-ttft: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
