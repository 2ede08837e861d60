// Shared pieces of the mesh tests: a real local cluster, golden cases, adapter registration.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createLogger } from "@loramesh/core";
import { startLocalCluster, type LocalCluster, type LocalClusterOptions } from "@loramesh/cli";
import { AdapterState } from "@loramesh/proto";
import { LoraMeshClient } from "@loramesh/sdk";
import { GOLDEN_DIR } from "@loramesh/testing";

export interface GoldenCase {
  adapter: string | null;
  prompt: number;
  output_ids: number[];
  min_top2_margin: number;
}
export interface Golden {
  prompts: Array<{ ids: number[] }>;
  cases: GoldenCase[];
  steps: number;
}

export function golden(model: string): Golden {
  return JSON.parse(readFileSync(join(GOLDEN_DIR, "expected", `${model}.json`), "utf8")) as Golden;
}

export const modelDir = (m: string): string => join(GOLDEN_DIR, "models", m);
export const adapterDir = (m: string, a: string): string => join(GOLDEN_DIR, "adapters", m, a);

// Service processes inherit the environment: keep their logs to warnings unless asked.
process.env["LOG_LEVEL"] ??= "warn";

export async function startCluster(
  options: Partial<LocalClusterOptions> & { modelDir: string },
): Promise<LocalCluster> {
  return startLocalCluster({
    routerListen: "127.0.0.1:0",
    mode: "disaggregated",
    workers: 2,
    loraServers: 1,
    // Many processes on a two-core machine other builds share: give each time to start.
    startTimeoutMs: 120_000,
    logger: createLogger({ level: process.env["LOG_LEVEL"] === "debug" ? "debug" : "silent" }),
    ...options,
  });
}

/** Registers adapters and waits until each is READY. */
export async function registerAll(client: LoraMeshClient, model: string, names: string[]): Promise<void> {
  for (const name of names) {
    await client.registerAdapter(name, adapterDir(model, name));
    for await (const _ of client.watchAdapterLoad(name)) void _;
    const adapter = await client.getAdapter(name);
    if (adapter.state !== AdapterState.ADAPTER_STATE_READY)
      throw new Error(`${name} is ${adapter.state}: ${adapter.error}`);
  }
}

/** Runs every golden case at once through the router; returns generated ids per case. */
export async function runGolden(client: LoraMeshClient, g: Golden): Promise<number[][]> {
  const results = await Promise.all(
    g.cases.map((c) =>
      client.complete({
        prompt: { $case: "tokenIds", value: { ids: (g.prompts[c.prompt] as { ids: number[] }).ids } },
        adapter: c.adapter ?? "",
        sampling: { maxTokens: g.steps, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true },
      }),
    ),
  );
  return results.map((r) => r.tokenIds);
}

export function adapterNames(g: Golden): string[] {
  return [...new Set(g.cases.map((c) => c.adapter).filter((a): a is string => a !== null))].sort();
}

/**
 * The ring segments process `pid` has mapped right now, from /proc/PID/maps (a segment whose name
 * was unlinked shows as "(deleted)"), each with the pid of the LoRA server that created it.
 */
export function ringMappings(pid: number): Array<{ segment: string; serverPid: number }> {
  let maps: string;
  try {
    maps = readFileSync(`/proc/${pid}/maps`, "utf8");
  } catch {
    return [];
  }
  const seen = new Map<string, number>();
  for (const m of maps.matchAll(/\/dev\/shm\/(loramesh-(\d+)-[0-9a-f]{16})/g)) seen.set(m[1] as string, Number(m[2]));
  return [...seen.entries()].map(([segment, serverPid]) => ({ segment, serverPid }));
}

/** Ring segment names still in /dev/shm that were created by one of `pids`. */
export function namedRingSegments(pids: readonly number[]): string[] {
  return readdirSync("/dev/shm").filter((n) => pids.some((p) => n.startsWith(`loramesh-${p}-`)));
}

/**
 * Resolves once `check` holds (it is polled: /proc and /dev/shm send no events); the limit only
 * bounds a wait for something that never happens, it is no assertion on time.
 */
export async function until(check: () => boolean, what: string, limitMs = 60_000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > limitMs) throw new Error(`gave up waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
