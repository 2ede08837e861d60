/**
 * Open-loop load against a running mesh: requests are sent at their Poisson arrival times whether or
 * not earlier ones finished (a closed loop would hide queueing), each streamed so that TTFT is the
 * client's time to the first token. The workload is the one the simulator runs (@loramesh/policy),
 * mapped onto adapters registered in the mesh.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { InvalidArgumentError } from "@loramesh/errors";
import { makeAdapters, makeRequests, percentile, SeededRandom, type Slo, type WorkloadSpec } from "@loramesh/policy";
import type { LoraMeshClient } from "@loramesh/sdk";

export interface LoadProgress {
  elapsedS: number;
  durationS: number;
  sent: number;
  done: number;
  errors: number;
  inFlight: number;
}

export interface LoadRun {
  client: LoraMeshClient;
  workload: WorkloadSpec;
  /** Mesh adapter name for each workload adapter id. */
  adapterNames: ReadonlyMap<string, string>;
  /** Prompt token ids are drawn from [3, vocabSize). */
  vocabSize: number;
  slo: Slo;
  /** Per-request deadline. */
  deadlineMs?: number;
  /** Keep every completed request's figures in the result (`requests`). */
  perRequest?: boolean;
  onProgress?: (p: LoadProgress) => void;
}

export interface LoadResult {
  rate: number;
  durationS: number;
  sent: number;
  completed: number;
  errors: number;
  /** Up to five distinct error messages. */
  errorSamples: string[];
  ttftMs: { p50: number; p95: number; p99: number };
  tpotMs: { p50: number; p95: number; p99: number; mean: number };
  throughputTokensPerSecond: number;
  requestsPerSecond: number;
  /** Share of requests meeting both targets (a failed request misses them). */
  sloAttainment: number;
  /** Share of adapters for which more than 90 % of requests met the SLO. */
  adaptersMeetingSlo: number;
  perAdapter: Record<string, { requests: number; attainment: number; ttftP95Ms: number }>;
  /** P95 TTFT within target, mean TPOT within target and no errors (InfiniLoRA's definition). */
  meetsSlo: boolean;
  phases?: { before: { ttftP95: number; attainment: number }; after: { ttftP95: number; attainment: number } };
  /** Each completed request (with `perRequest`): so runs of the same workload can be pooled. */
  requests?: RequestFigures[];
}

/** One completed request as the client timed it. */
export interface RequestFigures {
  arrivalS: number;
  ttftMs: number;
  tpotMs: number;
  tokens: number;
  /** The mesh adapter it ran on. */
  adapter?: string;
  /** The router's TTFT (its arrival → the first token it relays) and the worker's queue time, as the last message's timings say. */
  routerTtftMs?: number;
  workerQueueMs?: number;
}

interface Outcome {
  adapter: string;
  arrivalS: number;
  ok: boolean;
  ttftMs: number;
  tpotMs: number;
  tokens: number;
  routerTtftMs?: number;
  workerQueueMs?: number;
  error?: string;
}

/** For each workload adapter id, the available source of nearest rank. */
export function mapAdapters(
  workload: WorkloadSpec,
  available: ReadonlyArray<{ name: string; rank: number }>,
): Map<string, string> {
  const names = new Map<string, string>();
  for (const a of makeAdapters(workload)) {
    const best = nearestSource(a.rank, available);
    if (best) names.set(a.id, best);
  }
  return names;
}

/** The source whose `r` is nearest to `rank` (ties: first by name). */
export function nearestSource(
  rank: number,
  available: ReadonlyArray<{ name: string; rank: number }>,
): string | undefined {
  return [...available].sort(
    (x, y) => Math.abs(x.rank - rank) - Math.abs(y.rank - rank) || x.name.localeCompare(y.name),
  )[0]?.name;
}

/** The PEFT adapter folders under `dir`, each with its config's `r`. */
export function readAdapterSources(dir: string): Array<{ name: string; rank: number }> {
  let entries: string[];
  try {
    entries = readdirSync(dir, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name)
      .sort();
  } catch {
    throw new InvalidArgumentError(`--adapter-source ${dir} is not a readable directory`);
  }
  const out: Array<{ name: string; rank: number }> = [];
  for (const name of entries) {
    try {
      const config = JSON.parse(readFileSync(join(dir, name, "adapter_config.json"), "utf8")) as { r?: number };
      if (typeof config.r === "number") out.push({ name, rank: config.r });
    } catch {
      // not an adapter folder
    }
  }
  if (out.length === 0) throw new InvalidArgumentError(`--adapter-source ${dir} has no PEFT adapter folders`);
  return out;
}

export async function runLoad(run: LoadRun): Promise<LoadResult> {
  const { workload } = run;
  const adapters = makeAdapters(workload);
  const requests = makeRequests(workload, adapters);
  const rng = new SeededRandom(workload.seed * 31 + 7);
  const prompts = requests.map((r) =>
    Array.from({ length: r.promptTokens }, () => rng.int(3, Math.max(4, run.vocabSize))),
  );
  const outcomes: Outcome[] = [];
  let sent = 0;
  let inFlight = 0;
  const start = performance.now();
  const progress = run.onProgress
    ? setInterval(
        () =>
          run.onProgress?.({
            elapsedS: (performance.now() - start) / 1000,
            durationS: workload.duration,
            sent,
            done: outcomes.length,
            errors: outcomes.filter((o) => !o.ok).length,
            inFlight,
          }),
        1000,
      )
    : undefined;

  const one = async (index: number): Promise<void> => {
    const r = requests[index] as (typeof requests)[number];
    const wait = r.arrival * 1000 - (performance.now() - start);
    if (wait > 0) await new Promise((res) => setTimeout(res, wait));
    const name = run.adapterNames.get(r.adapter) ?? "";
    sent++;
    inFlight++;
    const t0 = performance.now();
    let first = 0;
    let tokens = 0;
    let timings: { timeToFirstTokenMs: number; queueMs: number } | undefined;
    try {
      for await (const delta of run.client.generate(
        {
          prompt: { $case: "tokenIds", value: { ids: prompts[index] as number[] } },
          adapter: name,
          sampling: {
            maxTokens: r.outputTokens,
            temperature: 0,
            topP: 1,
            topK: 0,
            stop: [],
            stopTokenIds: [],
            // Exactly the requested output length: no early end-of-sequence.
            ignoreEos: true,
            minTokens: r.outputTokens,
          },
        },
        { deadlineMs: run.deadlineMs ?? 120_000 },
      )) {
        if (delta.tokenIds.length > 0 && first === 0) first = performance.now();
        tokens += delta.tokenIds.length;
        if (delta.timings) timings = delta.timings;
      }
      const end = performance.now();
      outcomes.push({
        adapter: name,
        arrivalS: r.arrival,
        ok: true,
        ttftMs: (first || end) - t0,
        tpotMs: tokens > 1 ? (end - first) / (tokens - 1) : 0,
        tokens,
        ...(timings ? { routerTtftMs: timings.timeToFirstTokenMs, workerQueueMs: timings.queueMs } : {}),
      });
    } catch (err) {
      outcomes.push({
        adapter: name,
        arrivalS: r.arrival,
        ok: false,
        ttftMs: Infinity,
        tpotMs: Infinity,
        tokens,
        error: (err as Error).message,
      });
    } finally {
      inFlight--;
    }
  };
  await Promise.all(requests.map((_, i) => one(i)));
  if (progress) clearInterval(progress);
  const elapsedS = (performance.now() - start) / 1000;
  return summarize(outcomes, requests.length, elapsedS, run);
}

function summarize(outcomes: readonly Outcome[], sent: number, elapsedS: number, run: LoadRun): LoadResult {
  const { slo, workload } = run;
  const good = outcomes.filter((o) => o.ok);
  const ttft = good.map((o) => o.ttftMs).sort((a, b) => a - b);
  const tpot = good.map((o) => o.tpotMs).sort((a, b) => a - b);
  const meets = (o: Outcome): boolean => o.ok && o.ttftMs <= slo.ttftMs && o.tpotMs <= slo.tpotMs;
  const perAdapter: LoadResult["perAdapter"] = {};
  for (const name of new Set(outcomes.map((o) => o.adapter))) {
    const mine = outcomes.filter((o) => o.adapter === name);
    perAdapter[name || "(base)"] = {
      requests: mine.length,
      attainment: mine.filter(meets).length / mine.length,
      ttftP95Ms: percentile(
        mine
          .filter((o) => o.ok)
          .map((o) => o.ttftMs)
          .sort((a, b) => a - b),
        95,
      ),
    };
  }
  const adapterStats = Object.values(perAdapter);
  const meanTpot = tpot.reduce((s, x) => s + x, 0) / Math.max(1, tpot.length);
  const errors = outcomes.filter((o) => !o.ok);
  const result: LoadResult = {
    rate: workload.rate,
    durationS: elapsedS,
    sent,
    completed: good.length,
    errors: errors.length,
    errorSamples: [...new Set(errors.map((e) => e.error ?? ""))].slice(0, 5),
    ttftMs: { p50: percentile(ttft, 50), p95: percentile(ttft, 95), p99: percentile(ttft, 99) },
    tpotMs: { p50: percentile(tpot, 50), p95: percentile(tpot, 95), p99: percentile(tpot, 99), mean: meanTpot },
    throughputTokensPerSecond: good.reduce((s, o) => s + o.tokens, 0) / elapsedS,
    requestsPerSecond: good.length / elapsedS,
    sloAttainment: outcomes.filter(meets).length / Math.max(1, outcomes.length),
    adaptersMeetingSlo: adapterStats.filter((s) => s.attainment > 0.9).length / Math.max(1, adapterStats.length),
    perAdapter,
    meetsSlo: errors.length === 0 && good.length > 0 && percentile(ttft, 95) <= slo.ttftMs && meanTpot <= slo.tpotMs,
  };
  if (workload.driftAt !== undefined) {
    const cut = workload.duration * workload.driftAt;
    const phase = (list: readonly Outcome[]) => ({
      ttftP95: percentile(
        list
          .filter((o) => o.ok)
          .map((o) => o.ttftMs)
          .sort((a, b) => a - b),
        95,
      ),
      attainment: list.filter(meets).length / Math.max(1, list.length),
    });
    result.phases = {
      before: phase(outcomes.filter((o) => o.arrivalS <= cut)),
      after: phase(outcomes.filter((o) => o.arrivalS > cut)),
    };
  }
  if (run.perRequest)
    result.requests = good.map(({ arrivalS, ttftMs, tpotMs, tokens, adapter, routerTtftMs, workerQueueMs }) => ({
      arrivalS,
      ttftMs,
      tpotMs,
      tokens,
      adapter,
      ...(routerTtftMs !== undefined ? { routerTtftMs } : {}),
      ...(workerQueueMs !== undefined ? { workerQueueMs } : {}),
    }));
  return result;
}

/**
 * The highest rate (requests/s) at which a run meets the SLO: doubling from `startRate` until a
 * run fails, then bisection. Every probe is a real run of the workload's duration.
 */
export async function searchServiceableRate(
  probe: (rate: number) => Promise<LoadResult>,
  startRate: number,
  bisections: number,
  onProbe?: (result: LoadResult) => void,
): Promise<{ rate: number; probes: LoadResult[] }> {
  const probes: LoadResult[] = [];
  const run = async (rate: number): Promise<boolean> => {
    const r = await probe(rate);
    probes.push(r);
    onProbe?.(r);
    return r.meetsSlo;
  };
  let good = 0;
  let bad = 0;
  let rate = startRate;
  for (let i = 0; i < 8; i++) {
    if (await run(rate)) {
      good = rate;
      rate *= 2;
    } else {
      bad = rate;
      break;
    }
  }
  if (bad === 0) return { rate: good, probes };
  for (let i = 0; i < bisections; i++) {
    const mid = good === 0 ? bad / 2 : (good + bad) / 2;
    if (await run(mid)) good = mid;
    else bad = mid;
  }
  return { rate: good, probes };
}
