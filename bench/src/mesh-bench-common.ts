/** What the mesh benchmark's parts and bench/ring-round-trip share: adapters, statistics, the decode step, the site backends. */
import { hostname } from "node:os";
import { join } from "node:path";
import { RemoteLoraBackend } from "@loramesh/base-worker";
import { BUNDLED_ADAPTERS, BUNDLED_MODEL, type LocalCluster } from "@loramesh/cli";
import { createLogger } from "@loramesh/core";
import { LocalLoraBackend, loadAdapter, Model } from "@loramesh/engine";
import { siteShape, type ModelConfig } from "@loramesh/formats";
import { f32, nativeStep, type SiteBackendHandle } from "@loramesh/native";
import { PlacementCache } from "@loramesh/mesh";
import { DeadlineExceededError } from "@loramesh/errors";
import { LoraMeshClient } from "@loramesh/sdk";

const quiet = createLogger({ level: "error" });

export const ADAPTERS = ["big-r64", "chat-r16-all", "math-r4-mlp", "pattern-r8", "rslora-r32", "sql-r8"];

export function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))] as number;
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

export const round = (v: number, digits = 1): number => Number(v.toFixed(digits));

/** Every wait of the benchmark is bounded: a stuck phase fails with what it was waiting for. */
export const PHASE_MS = 180_000;
export async function within<T>(what: string, work: Promise<T>, ms = PHASE_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new DeadlineExceededError(`mesh bench: ${what} did not finish within ${ms} ms`)),
      ms,
    );
  });
  try {
    return await Promise.race([work, limit]);
  } finally {
    clearTimeout(timer);
  }
}

/** Registers the bundled adapters through the router and waits until each is loaded. */
export async function registerAdapters(routerAddress: string): Promise<void> {
  const client = new LoraMeshClient({ address: routerAddress, defaultDeadlineMs: PHASE_MS });
  try {
    for (const name of ADAPTERS) {
      await within(`registering adapter ${name}`, client.registerAdapter(name, join(BUNDLED_ADAPTERS, name)));
      await within(
        `loading adapter ${name}`,
        (async () => {
          for await (const _ of client.watchAdapterLoad(name)) void _;
        })(),
      );
    }
  } finally {
    client.close();
  }
}

/**
 * Decode step time with `sequences` sequences decoding at once: median over the sequences. `timed`
 * runs just before and after the timed pass (not around the warm-up).
 */
export async function decodeStepMsOn(
  routerAddress: string,
  sequences: number,
  tokens: number,
  timed?: { before(): Promise<void>; after(): Promise<void> },
): Promise<number> {
  const client = new LoraMeshClient({ address: routerAddress, defaultDeadlineMs: 600_000 });
  // Each step emits one token per sequence, so a sequence's decode time over its tokens is the
  // step time (token events may reach the client in bursts, so single gaps mean little).
  const steps: number[] = [];
  const run = async (record: boolean) =>
    Promise.all(
      Array.from({ length: sequences }, async (_, i) => {
        let first: number | undefined;
        let last = 0;
        let count = 0;
        for await (const delta of client.generate({
          prompt: { $case: "text", value: `def forward(self, hidden_states): # sequence ${i}` },
          adapter: ADAPTERS[i % ADAPTERS.length],
          sampling: {
            maxTokens: tokens,
            temperature: 0,
            topP: 1,
            topK: 0,
            stop: [],
            stopTokenIds: [],
            ignoreEos: true,
          },
        })) {
          if (delta.tokenIds.length === 0) continue;
          const now = performance.now();
          if (first === undefined) first = now;
          else count += delta.tokenIds.length;
          last = now;
        }
        if (record && first !== undefined && count > 0) steps.push((last - first) / count);
      }),
    );
  try {
    await within("warm-up decoding", run(false), 600_000);
    await timed?.before();
    await within("decoding", run(true), 600_000);
    await timed?.after();
  } finally {
    client.close();
  }
  return round(percentile(steps, 50), 2);
}

/** The placement as the provisioner sees it; without the cluster token this would never arrive. */
export async function placementOf(c: LocalCluster): Promise<PlacementCache> {
  const provisioner = c.processes.find((p) => p.service === "provisioner")?.address as string;
  const placement = new PlacementCache(provisioner, quiet);
  await within("the first placement snapshot", placement.ready, 60_000);
  return placement;
}

/** The bundled adapters in this process, under the ids the provisioner placed them as. */
export function localBackendFor(config: ModelConfig, ids: string[]): LocalLoraBackend {
  const local = new LocalLoraBackend(config);
  for (const [i, name] of ADAPTERS.entries())
    local.add(ids.find((id) => id.includes(`.${name}.`)) ?? `x${i}`, loadAdapter(join(BUNDLED_ADAPTERS, name), config));
  return local;
}

/**
 * The round-trip figures' workload: `rows` rows of the qkv site at layer 1, row t on adapter
 * t mod |ids|. `call` is one site for a JavaScript `apply`; `roundTrips` posts the same site
 * `iterations + 50` times from a native thread (the first 50 are warm-up).
 */
export function qkvSiteWorkload(config: ModelConfig, ids: string[], rows: number, iterations: number) {
  const { hIn, nOut } = siteShape(config, "qkv");
  const x = Float32Array.from({ length: rows * hIn }, (_, i) => Math.sin(i));
  const rowAdapter = Int32Array.from({ length: rows }, (_, t) => t % ids.length);
  return {
    nOut,
    call: () => ({
      layer: 1,
      site: "qkv" as const,
      x: f32([rows, hIn], x),
      y: f32([rows, nOut]),
      adapters: ids,
      rowAdapter,
    }),
    roundTrips: (backend: SiteBackendHandle, phases = false) =>
      nativeStep.siteRoundTrips(backend, {
        phases,
        adapters: ids,
        layer: 1,
        site: 0,
        rows,
        inFeatures: hIn,
        outFeatures: nOut,
        x,
        rowAdapter,
        iterations: iterations + 50,
        timeoutMs: 30_000,
      }),
  };
}

/** The three backends of the round-trip figures, against one disaggregated cluster. */
export async function siteBackends(cluster: LocalCluster): Promise<{
  local: LocalLoraBackend;
  shm: RemoteLoraBackend;
  grpc: RemoteLoraBackend;
  ids: string[];
  close: () => void;
}> {
  const model = Model.load(BUNDLED_MODEL);
  const placement = await placementOf(cluster);
  const ids = [...placement.holders.keys()].sort();
  const local = localBackendFor(model.config, ids);
  const remote = (sharedMemory: boolean) =>
    new RemoteLoraBackend({
      config: model.config,
      placement,
      workerId: sharedMemory ? "bench-shm" : "bench-grpc",
      hostId: hostname(),
      sharedMemory,
      timeoutMs: 30_000,
      failoverMs: 30_000,
      logger: quiet,
    });
  const shm = remote(true);
  const grpc = remote(false);
  return {
    local,
    shm,
    grpc,
    ids,
    close: () => {
      shm.close();
      grpc.close();
      placement.close();
    },
  };
}

/** The LoRA server's expected-post counters (Prometheus text), for a before/after difference. */
export async function ringServerSeries(c: LocalCluster): Promise<Record<string, number>> {
  const server = c.processes.find((p) => p.service === "lora-server");
  if (!server?.metricsAddress) return {};
  const text = await (await fetch(`http://${server.metricsAddress}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const found = /^loramesh_lora_ring_posts_found_total\{[^}]*state="(\w+)"[^}]*\}\s+(\S+)/.exec(line);
    if (found) out[found[1] as string] = Number(found[2]);
    const pre = /^loramesh_lora_ring_preempted_spins_total(?:\{[^}]*\})?\s+(\S+)/.exec(line);
    if (pre) out["preempted_spins"] = Number(pre[1]);
  }
  return out;
}
