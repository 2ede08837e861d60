/**
 * Mesh benchmark (not a test): on this machine, in one run,
 *  1. the per-site LoRA round trip from a worker to a LoRA server process over plain gRPC and over
 *     same-host shared memory, against the same computation in-process (coupled);
 *  2. generation throughput (tokens/s) of a coupled and a disaggregated cluster on the same model,
 *     adapters and requests.
 * With --json it prints one JSON object instead: the site round trip (p50/p99 µs, 8 rows: one
 * decode step of 8 sequences) in-process, over the shared-memory rings and over gRPC, each timed
 * post → wait on a native thread through the site backend the native step would get (so `shm` is
 * the ring with no JavaScript on the path, `grpc` the callback into the stream), and the decode
 * step with 8 sequences decoding at once (each sequence's decode time per token after its first,
 * median over the sequences) coupled, disaggregated over the rings and over gRPC, all in the same
 * run on the same model (coupled and shm: the medians of --passes alternated passes between a
 * coupled and a disaggregated cluster that stay up, after --warm-passes unrecorded ones, each
 * listed in `decode_step_passes`, their ratio in `shm_over_coupled`; gRPC: one pass on a fresh cluster); and under "ucx" the cross-host figures (mesh-bench-ucx.ts): per-site round
 * trip over UCX (tcp) vs gRPC across a veth link between network namespaces, and the decode step of
 * a worker on another host over each (or why they were not measured: no root, no UCX).
 * `site_round_trip_shm_ring` (also with --shm-only): the shm round-trip loop's own ring record, what
 * the LoRA server's thread was doing when each of its posts arrived (`posts_found`), its sites'
 * median queue / compute / wake µs, how many waits slept, and the phases of those over 50 µs.
 * `shm_step_ring` (also with --shm-only) says where the shm decode step's ring time went: ring
 * sites per step and µs per site (wait = queue + batch + compute + wake), from the worker's metrics.
 * `thread_cpu` (--shm-only --threads): every process's threads during each timed decode pass, CPU per step.
 * `decode_step_ms_worker`: the same passes on the worker's own clock (`--step-series`): the median
 * loop period of the steps that carried exactly 8 decoding rows (no prefill, none finishing), median
 * over the passes, and `shm_over_coupled_worker`; `decode_forward_ms_worker` the forward pass of
 * those steps alone. `decode_pass_details`: every pass with both clocks, its step shapes, the ring
 * phases and what the LoRA server's thread was doing when each post came, steal time, and the
 * data-plane threads' and event loops' CPU, run-queue wait and CPU moves per step.
 * `dataplane_priority`: the LORAMESH_DATAPLANE_PRIORITY all of it ran under (docs/configuration.md).
 *
 *   pnpm bench:mesh [--requests N] [--tokens N] [--iterations N] [--json [--passes N] [--warm-passes N] [--ucx-only | --shm-only [--threads]]]
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { BUNDLED_MODEL, startLocalCluster, type LocalCluster } from "@loramesh/cli";
import { booleanOption, createLogger, intOption, loadConfig, setClusterToken } from "@loramesh/core";
import { Model, type LoraBackend } from "@loramesh/engine";
import { siteShape, type LoraSite } from "@loramesh/formats";
import { f32, native, nativeStep, type SiteBackendHandle } from "@loramesh/native";
import { LoraMeshClient } from "@loramesh/sdk";
import { RemoteLoraBackend, type StepProfileFile, type StepSample } from "@loramesh/base-worker";
import {
  ADAPTERS,
  decodeStepMsOn,
  localBackendFor,
  median,
  percentile,
  placementOf,
  qkvSiteWorkload,
  registerAdapters,
  ringServerSeries,
  round,
  siteBackends,
  within,
} from "./mesh-bench-common";
import { ucxReport } from "./mesh-bench-ucx";
import { threadCpuDiff, threadSnapshot, type ThreadCpu, type ThreadSnapshot } from "./thread-cpu";

const quiet = createLogger({ level: "error" });
process.env["LOG_LEVEL"] ??= "error";

const options = {
  requests: intOption({
    flag: "requests",
    default: 24,
    min: 1,
    description: "concurrent generation requests per cluster",
  }),
  tokens: intOption({ flag: "tokens", default: 64, min: 1, description: "tokens generated per request" }),
  iterations: intOption({ flag: "iterations", default: 400, min: 10, description: "round trips timed per case" }),
  passes: intOption({
    flag: "passes",
    default: 9,
    min: 1,
    description:
      "with --json: alternated coupled / shm decode passes (between a coupled and a disaggregated cluster that stay up); the step figures are their medians",
  }),
  warmPasses: intOption({
    flag: "warm-passes",
    default: 4,
    min: 0,
    description:
      "with --json: alternated passes run first and not recorded (fresh processes' JavaScript is not optimized yet)",
  }),
  json: booleanOption({ flag: "json", description: "print one JSON object (round trip and decode step figures)" }),
  anchor: booleanOption({
    flag: "lora-overhead",
    default: true,
    description: "with --json, also time r16 LoRA on a TinyLlama-1.1B-shaped model (needs the bench:cpu-anchor files)",
  }),
  shmOnly: booleanOption({
    flag: "shm-only",
    description: "with --json: only the shm ring figures (site round trips, decode step coupled vs shm; a quicker run)",
  }),
  threads: booleanOption({
    flag: "threads",
    description:
      "with --json --shm-only: also per-thread CPU of every process during the timed decode (who competes with the ring threads)",
  }),
  ucxOnly: booleanOption({
    flag: "ucx-only",
    description: 'with --json: only the cross-host "ucx" entries (a quicker run)',
  }),
};

/** Where `pnpm bench:cpu-anchor` caches its TinyLlama-1.1B-shaped model and adapters. */
const ANCHOR_DIR = join(tmpdir(), "loramesh-cpu-anchor-tinyllama-1.1b-bf16");

/** Alternated base / r16 rounds of the overhead figure (bench:decode-step --rounds). */
const R16_ROUNDS = 3;

/**
 * How much an r16 adapter on all 7 modules adds to a decode step of the 1.1B-shaped model, batch
 * 1, through the native step (bench:decode-step in a child process: wall and CPU ms medians over
 * R16_ROUNDS alternated base / r16 rounds of 8 steps each, fresh caches each round; one base run
 * then one r16 run swung the figure ±20 % between runs of the same code).
 * Null when the cpu-anchor files are not there (`pnpm bench:cpu-anchor` writes them).
 */
function loraR16Overhead(): Record<string, number> | null {
  if (!existsSync(join(ANCHOR_DIR, "model")) || !existsSync(join(ANCHOR_DIR, "adapters", "r16"))) return null;
  const script = join(__dirname, "decode-step.js");
  const args = [
    script,
    "--model",
    join(ANCHOR_DIR, "model"),
    "--adapter",
    `r16=${join(ANCHOR_DIR, "adapters", "r16")}`,
  ];
  const r = spawnSync(process.execPath, [...args, "--steps", "8", "--rounds", String(R16_ROUNDS), "--json"], {
    encoding: "utf8",
    timeout: 900_000,
  });
  if (r.status !== 0) throw new Error(`mesh bench: decode-step failed: ${r.stderr || r.error?.message}`);
  const out = JSON.parse(r.stdout) as Record<string, { wall_ms: number; cpu_ms: number }>;
  const base = out["base"] as { wall_ms: number; cpu_ms: number };
  const r16 = out["r16"] as { wall_ms: number; cpu_ms: number };
  return {
    base_wall_ms: base.wall_ms,
    r16_wall_ms: r16.wall_ms,
    wall_pct: round((r16.wall_ms / base.wall_ms - 1) * 100),
    base_cpu_ms: base.cpu_ms,
    r16_cpu_ms: r16.cpu_ms,
    cpu_pct: round((r16.cpu_ms / base.cpu_ms - 1) * 100),
    rounds: R16_ROUNDS,
  };
}

/** A local cluster whose token this process carries too (the bench talks to the provisioner itself). */
async function startCluster(options: Parameters<typeof startLocalCluster>[0]): Promise<LocalCluster> {
  const c = await startLocalCluster({ startTimeoutMs: 180_000, ...options });
  setClusterToken(c.clusterToken);
  return c;
}

async function roundTrips(iterations: number): Promise<void> {
  const model = Model.load(BUNDLED_MODEL);
  const cluster = await startCluster({
    routerListen: "127.0.0.1:0",
    modelDir: BUNDLED_MODEL,
    mode: "disaggregated",
    workers: 1,
    loraServers: 1,
    logger: quiet,
  });
  try {
    await registerAdapters(cluster.routerAddress);
    const placement = await placementOf(cluster);
    const ids = [...placement.holders.keys()].sort();
    const local = localBackendFor(model.config, ids);
    const backends: Array<[string, LoraBackend]> = [
      ["in-process (coupled)", local],
      [
        "gRPC",
        new RemoteLoraBackend({
          config: model.config,
          placement,
          workerId: "bench-grpc",
          hostId: hostname(),
          sharedMemory: false,
          logger: quiet,
        }),
      ],
      [
        "shared memory",
        new RemoteLoraBackend({
          config: model.config,
          placement,
          workerId: "bench-shm",
          hostId: hostname(),
          sharedMemory: true,
          logger: quiet,
        }),
      ],
    ];
    console.log(`\n## Per-site LoRA round trip (tiny-llama, ${ids.length} adapters, median of ${iterations})\n`);
    console.log(`| site | tokens | ${backends.map(([n]) => n).join(" µs | ")} µs | gRPC / shm |`);
    console.log(`|---|---|${backends.map(() => "---|").join("")}---|`);
    for (const site of ["qkv", "down"] as LoraSite[]) {
      for (const tokens of [1, 16, 256]) {
        const { hIn, nOut } = siteShape(model.config, site);
        const x = f32(
          [tokens, hIn],
          Float32Array.from({ length: tokens * hIn }, (_, i) => Math.sin(i)),
        );
        const rowAdapter = Int32Array.from({ length: tokens }, (_, t) => t % ids.length);
        const times: number[] = [];
        for (const [, backend] of backends) {
          const samples: number[] = [];
          for (let i = 0; i < iterations + 20; i++) {
            const y = f32([tokens, nOut]);
            const t0 = performance.now();
            await within(`a ${site} site`, backend.apply({ layer: 1, site, x, y, adapters: ids, rowAdapter }), 60_000);
            if (i >= 20) samples.push((performance.now() - t0) * 1000);
          }
          times.push(median(samples));
        }
        console.log(
          `| ${site} | ${tokens} | ${times.map((t) => t.toFixed(0)).join(" | ")} | ${((times[1] as number) / (times[2] as number)).toFixed(2)}x |`,
        );
      }
    }
    for (const [, b] of backends) if (b instanceof RemoteLoraBackend) b.close();
    placement.close();
  } finally {
    await cluster.stop();
  }
}

async function throughput(
  mode: "coupled" | "disaggregated",
  requests: number,
  tokens: number,
): Promise<{ tokensPerSecond: number; seconds: number }> {
  const cluster = await startCluster({
    routerListen: "127.0.0.1:0",
    modelDir: BUNDLED_MODEL,
    mode,
    workers: 1,
    loraServers: 1,
    logger: quiet,
  });
  try {
    await registerAdapters(cluster.routerAddress);
    const client = new LoraMeshClient({ address: cluster.routerAddress, defaultDeadlineMs: 600_000 });
    const run = () =>
      Promise.all(
        Array.from({ length: requests }, (_, i) =>
          client.complete({
            prompt: { $case: "text", value: `def forward(self, hidden_states): # request ${i}` },
            adapter: i % 7 === 6 ? "" : (ADAPTERS[i % 6] as string),
            sampling: {
              maxTokens: tokens,
              temperature: 0,
              topP: 1,
              topK: 0,
              stop: [],
              stopTokenIds: [],
              ignoreEos: true,
            },
          }),
        ),
      );
    await within("warm-up generation", run(), 600_000); // warm-up
    const t0 = performance.now();
    const results = await within("generation", run(), 600_000);
    const seconds = (performance.now() - t0) / 1000;
    client.close();
    const generated = results.reduce((s, r) => s + r.tokenIds.length, 0);
    return { tokensPerSecond: generated / seconds, seconds };
  } finally {
    await cluster.stop();
  }
}

/** The callback site backend the native step gets for a JavaScript LoRA backend (as forward.ts builds it). */
function callbackBackend(lora: LoraBackend, adapters: readonly string[]): SiteBackendHandle {
  const sites: readonly LoraSite[] = ["qkv", "o", "gate_up", "down"];
  return nativeStep.callbackSiteBackend(async (req) => {
    const y = f32([req.rows, req.outFeatures]);
    await lora.apply({
      layer: req.layer,
      site: sites[req.site] as LoraSite,
      x: f32([req.rows, req.inFeatures], req.x),
      y,
      adapters,
      rowAdapter: req.rowAdapter,
    });
    return y.data;
  });
}

/**
 * p50/p99 µs of one qkv site of `rows` rows (every row with an adapter), timed post → wait on a
 * native thread through the backend the native step gets: the local kernels, the ring (routed, no
 * JavaScript), the callback into the gRPC stream. `*_js` keys: the same site through `apply`.
 */
async function siteRoundTripUs(
  iterations: number,
  rows: number,
): Promise<{ us: Record<string, { p50: number; p99: number }>; shmRing: Record<string, unknown> }> {
  const model = Model.load(BUNDLED_MODEL);
  const c = await startCluster({
    routerListen: "127.0.0.1:0",
    modelDir: BUNDLED_MODEL,
    mode: "disaggregated",
    workers: 1,
    loraServers: 1,
    logger: quiet,
  });
  try {
    await registerAdapters(c.routerAddress);
    const { local, shm, grpc, ids, close } = await siteBackends(c);
    const { call, roundTrips } = qkvSiteWorkload(model.config, ids, rows, iterations);
    const stats = (samples: ArrayLike<number>) => {
      const v = Array.from(samples).slice(50);
      return { p50: round(percentile(v, 50)), p99: round(percentile(v, 99)) };
    };
    const out: Record<string, { p50: number; p99: number }> = {};
    // JavaScript path first: it also attaches the ring the native path then uses.
    for (const [name, backend] of [
      ["shm_js", shm],
      ["grpc_js", grpc],
    ] as const) {
      const samples: number[] = [];
      for (let i = 0; i < iterations + 50; i++) {
        const t0 = performance.now();
        await within(`a ${name} site`, backend.apply(call()), 60_000);
        samples.push((performance.now() - t0) * 1000);
      }
      out[name] = stats(samples);
    }
    const timed = (backend: SiteBackendHandle, what: string, phases = false) =>
      within(what, roundTrips(backend, phases));
    out["in_process"] = stats(await timed(local.nativeSiteBackend(), "in-process sites"));
    const fallback = callbackBackend(shm, ids);
    const ring = shm.stepSiteBackend(ids, () => fallback);
    if (!ring) throw new Error("mesh bench: the shared-memory ring to the LoRA server is not attached");
    const before = nativeStep.routedStats().ringSites;
    const foundBefore = await ringServerSeries(c);
    // Six numbers a site (µs, then the ring's queue / batch / compute / wake µs and whether the
    // worker slept): the same timed post → wait, read apart afterwards.
    const all = Array.from(await timed(ring, "ring sites", true));
    const foundAfter = await ringServerSeries(c);
    const field = (k: number) => all.filter((_, i) => i % 6 === k);
    out["shm"] = stats(field(0));
    if (nativeStep.routedStats().ringSites - before !== iterations + 50)
      throw new Error("mesh bench: some shm sites did not go through the ring (adapters missing from its table?)");
    // Where the timed ring sites' time went (the 50 warm ones left out, as in the figure).
    const timedOnly = (k: number) => field(k).slice(50);
    const slow = timedOnly(0).flatMap((v, i) => (v > 50 ? [i] : []));
    const p50Of = (v: number[]) => (v.length ? round(percentile(v, 50)) : null);
    const pick = (k: number) => slow.map((i) => timedOnly(k)[i] as number);
    const shmRing = {
      // New posts by what the LoRA server's ring thread was doing when each arrived (warm ones too).
      posts_found: Object.fromEntries(
        Object.keys(foundAfter)
          .map((k) => [k, (foundAfter[k] ?? 0) - (foundBefore[k] ?? 0)] as const)
          .filter(([, v]) => v !== 0),
      ),
      queue_us_p50: p50Of(timedOnly(1)),
      compute_us_p50: p50Of(timedOnly(3)),
      wake_us_p50: p50Of(timedOnly(4)),
      worker_sleeps: timedOnly(5).reduce((a, v) => a + v, 0),
      over_50us: slow.length,
      over_50us_queue_us_p50: p50Of(pick(1)),
      over_50us_wake_us_p50: p50Of(pick(4)),
    };
    const viaStream = callbackBackend(grpc, ids);
    out["grpc"] = stats(await timed(viaStream, "gRPC sites"));
    // The ring's step backend belongs to `shm` (released by its close()).
    for (const h of [fallback, viaStream]) nativeStep.disposeSiteBackend(h);
    close();
    return {
      us: {
        in_process: out["in_process"],
        shm: out["shm"],
        grpc: out["grpc"],
        shm_js: out["shm_js"],
        grpc_js: out["grpc_js"],
      } as Record<string, { p50: number; p99: number }>,
      shmRing,
    };
  } finally {
    await c.stop();
  }
}

/** Sums of the base worker's ring and step series (Prometheus text), for a before/after difference. */
async function ringSeries(c: LocalCluster): Promise<Record<string, number>> {
  const worker = c.processes.find((p) => p.service === "base-worker");
  if (!worker?.metricsAddress) throw new Error("mesh bench: the base worker exports no metrics");
  const text = await (await fetch(`http://${worker.metricsAddress}/metrics`)).text();
  const sum = (re: RegExp) =>
    text
      .split("\n")
      .filter((line) => re.test(line))
      .reduce((acc, line) => acc + Number(line.trim().split(/\s+/).pop()), 0);
  const out: Record<string, number> = {
    steps: sum(/^loramesh_batch_sequences_count\b/),
    ring_sites: sum(/^loramesh_lora_ring_sites_total\{[^}]*path="ring"/),
    ring_steps: sum(/^loramesh_lora_ring_step_seconds_count\b/),
    ring_wait_s: sum(/^loramesh_lora_ring_step_seconds_sum\b/),
  };
  for (const phase of ["queue", "batch", "compute", "wake"])
    out[`${phase}_s`] = sum(new RegExp(`^loramesh_lora_ring_seconds_total\\{[^}]*phase="${phase}"`));
  return out;
}

/**
 * Where the ring time of a disaggregated (shm) decode step goes: ring sites per step, and per site
 * the wait (post → response seen) split into queue (→ the server's thread saw it), batch (→ kernel
 * start), compute (kernel and copy) and wake (→ the worker saw it); µs, from the worker's metrics.
 */
export interface RingProfile {
  steps: number;
  sites_per_step: number;
  ring_wait_us_per_step: number;
  per_site_us: { wait: number; queue: number; batch: number; compute: number; wake: number };
}

function ringProfile(before: Record<string, number>, after: Record<string, number>): RingProfile {
  const d = (k: string) => (after[k] ?? 0) - (before[k] ?? 0);
  const sites = Math.max(1, d("ring_sites"));
  const us = (k: string) => round((d(k) * 1e6) / sites);
  return {
    steps: d("ring_steps"),
    sites_per_step: round(d("ring_sites") / Math.max(1, d("ring_steps"))),
    ring_wait_us_per_step: round((d("ring_wait_s") * 1e6) / Math.max(1, d("ring_steps"))),
    per_site_us: {
      wait: us("ring_wait_s"),
      queue: us("queue_s"),
      batch: us("batch_s"),
      compute: us("compute_s"),
      wake: us("wake_s"),
    },
  };
}

/**
 * The worker's own clock for one timed pass (its `--step-series`): the steps that started inside
 * the pass, by how many rows they carried, and the loop period and forward pass of the steps the
 * issue means (8 rows, all decoding, no prefill, none finishing), ms.
 */
export interface WorkerSteps {
  /** Median loop period of the 8-row decode steps: what a decoding sequence waits between tokens. */
  step_ms: number;
  /** Median forward pass of the same steps (the native step and its LoRA sites, without JavaScript around it). */
  forward_ms: number;
  /**
   * Median JavaScript of the same steps' forward pass (its time outside the native step: laying out
   * the step, its LoRA site backends, the logits back), µs; NaN from a worker without the figure.
   */
  forward_js_us: number;
  /** Their 90th percentile period. */
  step_p90_ms: number;
  /** Steps in the pass, the 8-row decode steps among them, steps with prefill rows, and the other decode steps. */
  steps: number;
  decode8_steps: number;
  prefill_steps: number;
  other_steps: number;
  /** Mean period over every step of the pass: the client's figure spreads prefill and ragged steps over the tokens. */
  mean_step_ms: number;
}

function workerSteps(series: readonly StepSample[], fromMs: number, toMs: number, rows: number): WorkerSteps {
  const inPass = series.filter((s) => s.atMs >= fromMs && s.atMs < toMs);
  const decode = inPass.filter((s) => s.sequences === rows && s.prefillTokens === 0 && s.finished === 0);
  const prefill = inPass.filter((s) => s.prefillTokens > 0).length;
  const ms = (us: number) => round(us / 1000, 3);
  const periods = decode.map((s) => s.periodUs);
  return {
    step_ms: periods.length ? ms(median(periods)) : NaN,
    forward_ms: periods.length ? ms(median(decode.map((s) => s.forwardUs))) : NaN,
    forward_js_us: periods.length ? round(median(decode.map((s) => s.forwardUs - s.nativeUs)), 1) : NaN,
    step_p90_ms: periods.length ? ms(percentile(periods, 90)) : NaN,
    steps: inPass.length,
    decode8_steps: decode.length,
    prefill_steps: prefill,
    other_steps: inPass.length - decode.length - prefill,
    mean_step_ms: inPass.length ? ms(inPass.reduce((a, s) => a + s.periodUs, 0) / inPass.length) : NaN,
  };
}

/** Steal and busy time of the whole machine (/proc/stat, ms), for a before/after difference. */
function cpuTimes(): { steal: number; busy: number; total: number } {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
    const tick = 10; // USER_HZ = 100 on Linux
    const total = f.reduce((a, v) => a + v, 0);
    return { steal: (f[7] ?? 0) * tick, busy: (total - (f[3] ?? 0) - (f[4] ?? 0)) * tick, total: total * tick };
  } catch {
    return { steal: 0, busy: 0, total: 0 };
  }
}

/** One timed decode pass of one mode, seen from the client, the worker, the LoRA server and the machine. */
export interface DecodePass {
  /** The client's figure (each sequence's decode time per token after its first, median over the sequences). */
  client_ms: number;
  worker?: WorkerSteps;
  ring?: RingProfile;
  /** New ring posts by what the LoRA server's ring thread was doing when each arrived, and its descheduled spins. */
  ring_server?: Record<string, number>;
  /** Machine-wide during the pass: CPU stolen by the hypervisor and busy time, ms; the pass's wall ms. */
  steal_ms: number;
  busy_ms: number;
  wall_ms: number;
  /** The data-plane threads and the event loops, µs per engine step (run / run-queue wait) and moves between CPUs. */
  threads: Record<string, { run: number; wait: number; migrations: number }>;
  thread_cpu?: { steps: number; threads: ThreadCpu[] };
}

let passFiles = 0;

/** A cluster that serves decode passes; its worker keeps its step series, read once it stops. */
interface DecodeCluster {
  cluster: LocalCluster;
  mode: "coupled" | "disaggregated";
  sharedMemory: boolean;
  series: string;
  /** Each pass's timed window, for the series. */
  windows: Array<{ from: number; to: number; pass: Omit<DecodePass, "worker"> }>;
}

async function decodeCluster(
  mode: "coupled" | "disaggregated",
  sharedMemory: boolean,
  clusterToken?: string,
): Promise<DecodeCluster> {
  const series = join(tmpdir(), `loramesh-mesh-steps-${process.pid}-${passFiles++}.json`);
  const cluster = await startCluster({
    routerListen: "127.0.0.1:0",
    modelDir: BUNDLED_MODEL,
    mode,
    workers: 1,
    loraServers: 1,
    logger: quiet,
    ...(clusterToken ? { clusterToken } : {}),
    extraArgs: {
      "base-worker": [`--shared-memory=${sharedMemory}`, "--step-profile", series, "--step-series"],
    },
  });
  try {
    await registerAdapters(cluster.routerAddress);
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return { cluster, mode, sharedMemory, series, windows: [] };
}

/** Stops the cluster and returns its passes, each with the worker's own figures (written at stop). */
async function closeDecodeCluster(c: DecodeCluster, sequences: number): Promise<DecodePass[]> {
  await c.cluster.stop();
  let series: StepSample[] | undefined;
  try {
    series = (JSON.parse(readFileSync(c.series, "utf8")) as StepProfileFile).series;
  } catch {
    series = undefined; // no step series (an older worker): the client's figures only
  } finally {
    rmSync(c.series, { force: true });
  }
  return c.windows.map(({ from, to, pass }) =>
    series ? { ...pass, worker: workerSteps(series, from, to, sequences) } : pass,
  );
}

/**
 * One timed decode pass (after its warm-up) with `sequences` sequences decoding at once on a live
 * cluster; the worker's figures are added when the cluster stops (closeDecodeCluster).
 */
async function decodePass(c: DecodeCluster, sequences: number, tokens: number, keepThreads = false): Promise<void> {
  const { cluster } = c;
  const ringProfiled = c.mode === "disaggregated" && c.sharedMemory;
  // Who ran during the timed pass: every cluster process, Redis and this bench (the client).
  const pids = () => [
    ...cluster.processes.map((p) => ({ name: p.service, pid: p.pid })),
    ...(cluster.redisPid ? [{ name: "redis", pid: cluster.redisPid }] : []),
    { name: "bench-client", pid: process.pid },
  ];
  let before: Record<string, number> = {};
  let serverBefore: Record<string, number> = {};
  let snap0: ThreadSnapshot = new Map();
  let cpu0 = cpuTimes();
  let from = 0;
  let to = 0;
  let out: Omit<DecodePass, "client_ms" | "worker"> | undefined;
  const client_ms = await decodeStepMsOn(cluster.routerAddress, sequences, tokens, {
    before: async () => {
      before = await ringSeries(cluster);
      serverBefore = ringProfiled ? await ringServerSeries(cluster) : {};
      snap0 = threadSnapshot(pids());
      cpu0 = cpuTimes();
      from = performance.timeOrigin + performance.now();
    },
    after: async () => {
      to = performance.timeOrigin + performance.now();
      const cpu1 = cpuTimes();
      const snap1 = threadSnapshot(pids());
      const after = await ringSeries(cluster);
      const steps = (after["steps"] ?? 0) - (before["steps"] ?? 0);
      const threads = threadCpuDiff(snap0, snap1, steps);
      const pick: Record<string, { run: number; wait: number; migrations: number }> = {};
      for (const t of threads) {
        const wanted =
          t.thread === "lm-step" ||
          t.thread === "lm-pool" ||
          t.thread === "lm-ring-server" ||
          (t.thread === "main" && ["router", "base-worker", "bench-client", "lora-server"].includes(t.process));
        if (wanted)
          pick[`${t.process}/${t.thread}`] = {
            run: t.run_us_per_step,
            wait: t.wait_us_per_step,
            migrations: t.migrations_per_step,
          };
      }
      let ring_server: Record<string, number> | undefined;
      if (ringProfiled) {
        const s1 = await ringServerSeries(cluster);
        ring_server = Object.fromEntries(Object.entries(s1).map(([k, v]) => [k, v - (serverBefore[k] ?? 0)]));
      }
      out = {
        ...(ringProfiled ? { ring: ringProfile(before, after) } : {}),
        ...(ring_server ? { ring_server } : {}),
        steal_ms: cpu1.steal - cpu0.steal,
        busy_ms: cpu1.busy - cpu0.busy,
        wall_ms: round(to - from),
        threads: pick,
        ...(keepThreads ? { thread_cpu: { steps, threads } } : {}),
      };
    },
  });
  c.windows.push({ from, to, pass: { client_ms, ...(out as Omit<DecodePass, "client_ms" | "worker">) } });
}

/** Decode step with 8 sequences decoding at once on a cluster of its own, one pass (the gRPC row). */
async function decodeStepMs(
  mode: "coupled" | "disaggregated",
  sharedMemory: boolean,
  sequences: number,
  tokens: number,
): Promise<DecodePass> {
  const c = await decodeCluster(mode, sharedMemory);
  try {
    await decodePass(c, sequences, tokens);
  } catch (err) {
    await c.cluster.stop();
    rmSync(c.series, { force: true });
    throw err;
  }
  return (await closeDecodeCluster(c, sequences))[0] as DecodePass;
}

/**
 * The coupled and the shm decode step, `passes` times each, alternated (coupled, shm, coupled, …)
 * between a coupled and a disaggregated cluster that both stay up, so that a drift of the
 * machine's speed falls on both modes alike: the same code's pass moved 1.0–2.9 ms (worker clock)
 * within one run, in stretches of a few seconds (docs/performance.md, branch m13i), and a pass on a
 * cluster of its own took ~4 s of start-up, so 3 passes a mode spanned half a minute; here a pass
 * is its warm-up and timed decode, under a second. The medians are the figures, every pass is
 * reported. The ring profile is the median shm pass's.
 */
async function alternatedSteps(
  passes: number,
  warmPasses: number,
  tokens: number,
  keepThreads = false,
): Promise<{
  coupled: number;
  shm: number;
  ring: RingProfile | undefined;
  runs: { coupled: number[]; shm: number[] };
  details: { coupled: DecodePass[]; shm: DecodePass[] };
}> {
  const coupledCluster = await decodeCluster("coupled", true);
  let shmCluster: DecodeCluster | undefined;
  try {
    // One token for both: this process talks to both routers.
    shmCluster = await decodeCluster("disaggregated", true, coupledCluster.cluster.clusterToken);
    // Unrecorded passes first: fresh processes run their JavaScript unoptimized for the first few
    // thousand tokens (the router's CPU per step fell 1297 → 420 µs over 9 passes of one cluster),
    // and how far V8 got by a timed pass varied from pass to pass (docs/performance.md, m13i).
    for (let i = 0; i < warmPasses; i++) {
      await decodePass(coupledCluster, 8, tokens);
      await decodePass(shmCluster, 8, tokens);
    }
    coupledCluster.windows.length = 0;
    shmCluster.windows.length = 0;
    for (let i = 0; i < passes; i++) {
      await decodePass(coupledCluster, 8, tokens, keepThreads);
      await decodePass(shmCluster, 8, tokens, keepThreads);
    }
  } catch (err) {
    await Promise.all([coupledCluster.cluster.stop(), shmCluster?.cluster.stop()]);
    for (const c of [coupledCluster, shmCluster]) if (c) rmSync(c.series, { force: true });
    throw err;
  }
  const details = {
    coupled: await closeDecodeCluster(coupledCluster, 8),
    shm: await closeDecodeCluster(shmCluster, 8),
  };
  const runs = { coupled: details.coupled.map((p) => p.client_ms), shm: details.shm.map((p) => p.client_ms) };
  const shm = median(runs.shm);
  return {
    coupled: median(runs.coupled),
    shm,
    ring: details.shm[runs.shm.indexOf(shm)]?.ring,
    runs,
    details,
  };
}

/** The worker-measured figures over passes: medians of the passes' 8-row decode medians, ms. */
function workerFigures(passes: DecodePass[]): { step: number; forward: number; forwardJs: number } {
  const steps = passes.map((p) => p.worker?.step_ms ?? NaN).filter((v) => Number.isFinite(v));
  const forwards = passes.map((p) => p.worker?.forward_ms ?? NaN).filter((v) => Number.isFinite(v));
  const js = passes.map((p) => p.worker?.forward_js_us ?? NaN).filter((v) => Number.isFinite(v));
  return {
    step: steps.length ? round(median(steps), 3) : NaN,
    forward: forwards.length ? round(median(forwards), 3) : NaN,
    forwardJs: js.length ? round(median(js), 1) : NaN,
  };
}

/**
 * The data-plane thread priority every figure was measured under (the services inherit this
 * process's LORAMESH_DATAPLANE_PRIORITY); "refused" when this process could not raise its threads
 * (no CAP_SYS_NICE), so they ran at normal priority.
 */
function dataplanePriority(): string {
  const p = native.dataplanePriority();
  return p.refused > 0 ? `${p.setting} (refused: ${p.error})` : p.setting;
}

/**
 * The worker-measured step next to the client's: `decode_step_ms_worker` (median over passes of
 * each pass's median loop period over its 8-row decode steps), `decode_forward_ms_worker` (the
 * same steps' forward pass), their shm ÷ coupled ratios, and every pass in detail.
 */
function workerReport(
  details: { coupled: DecodePass[]; shm: DecodePass[] },
  grpc?: DecodePass,
): Record<string, unknown> {
  const c = workerFigures(details.coupled);
  const m = workerFigures(details.shm);
  const g = grpc ? workerFigures([grpc]) : undefined;
  return {
    decode_step_ms_worker: {
      coupled: c.step,
      disaggregated_shm: m.step,
      ...(g ? { disaggregated_grpc: g.step } : {}),
    },
    shm_over_coupled_worker: round(m.step / c.step, 3),
    // Each shm pass against the coupled pass just before it, median over the pairs: a drift of
    // the machine's speed between passes (the same code's forward pass moved 0.46–1.45 ms) cancels.
    shm_over_coupled_worker_pairs: round(
      median(
        details.shm
          .map((p, i) => (p.worker?.step_ms ?? NaN) / (details.coupled[i]?.worker?.step_ms ?? NaN))
          .filter((r) => Number.isFinite(r)),
      ),
      3,
    ),
    decode_forward_ms_worker: {
      coupled: c.forward,
      disaggregated_shm: m.forward,
      ...(g ? { disaggregated_grpc: g.forward } : {}),
    },
    shm_over_coupled_forward: round(m.forward / c.forward, 3),
    // The forward pass's own JavaScript per 8-row step (µs, median over passes): what the worker's
    // event loop spends per step on the step besides waiting for it.
    decode_forward_js_us_worker: {
      coupled: c.forwardJs,
      disaggregated_shm: m.forwardJs,
      ...(g ? { disaggregated_grpc: g.forwardJs } : {}),
    },
    decode_pass_details: {
      coupled: details.coupled.map(({ thread_cpu: _, ...p }) => p),
      disaggregated_shm: details.shm.map(({ thread_cpu: _, ...p }) => p),
      ...(grpc ? { disaggregated_grpc: [(({ thread_cpu: _, ...p }) => p)(grpc)] } : {}),
    },
  };
}

async function jsonReport(
  iterations: number,
  tokens: number,
  overhead: boolean,
  passes: number,
  warmPasses: number,
): Promise<void> {
  const { us: siteUs, shmRing } = await siteRoundTripUs(iterations, 8);
  const { coupled, shm, ring, runs, details } = await alternatedSteps(passes, warmPasses, tokens);
  const grpcPass = await decodeStepMs("disaggregated", false, 8, tokens);
  const grpc = grpcPass.client_ms;
  const r16 = overhead ? loraR16Overhead() : null;
  const ucx = await ucxReport(iterations, tokens);
  const os = await import("node:os");
  console.log(
    JSON.stringify({
      site_round_trip_us: siteUs,
      site_round_trip_shm_ring: shmRing,
      decode_step_ms: { coupled, disaggregated_shm: shm, disaggregated_grpc: grpc },
      shm_over_coupled: round(shm / coupled),
      // Each alternated pass's step (the figures above are their medians; gRPC is one pass).
      decode_step_passes: { coupled: runs.coupled, disaggregated_shm: runs.shm },
      // The same passes on the worker's own clock (8-row decode steps only), and each pass in detail.
      ...workerReport(details, grpcPass),
      // Where the shm step's ring time went: sites per step and µs per site by phase.
      shm_step_ring: ring,
      model: "tiny-llama (bundled), 6 adapters (r4-r64)",
      site: "qkv, 8 rows, layer 1",
      sequences: 8,
      // LoRA r16 (all 7 modules) on a TinyLlama-1.1B-shaped model: % added to one decode step.
      lora_r16_decode_overhead: r16 && { ...r16, model: "TinyLlama-1.1B shape, bf16, random weights, batch 1" },
      ucx,
      machine: `${os.hostname()}, ${os.cpus().length} cores, node ${process.version}`,
      dataplane_priority: dataplanePriority(),
    }),
  );
}

async function main(): Promise<void> {
  const { config } = loadConfig(options, process.argv.slice(2));
  if (config.json && config.ucxOnly)
    return console.log(JSON.stringify({ ucx: await ucxReport(config.iterations, config.tokens) }));
  if (config.json && config.shmOnly) {
    const { us: siteUs, shmRing } = await siteRoundTripUs(config.iterations, 8);
    const { coupled, shm, ring, runs, details } = await alternatedSteps(
      config.passes,
      config.warmPasses,
      config.tokens,
      config.threads,
    );
    // --threads keeps the last pass of each mode.
    const last = (p: DecodePass[]) => p[p.length - 1]?.thread_cpu;
    return console.log(
      JSON.stringify({
        site_round_trip_us: siteUs,
        site_round_trip_shm_ring: shmRing,
        decode_step_ms: { coupled, disaggregated_shm: shm, shm_over_coupled: round(shm / coupled) },
        decode_step_passes: { coupled: runs.coupled, disaggregated_shm: runs.shm },
        ...workerReport(details),
        shm_step_ring: ring,
        // --threads: per-thread CPU during each timed decode pass, per engine step.
        ...(config.threads ? { thread_cpu: { coupled: last(details.coupled), shm: last(details.shm) } } : {}),
        dataplane_priority: dataplanePriority(),
      }),
    );
  }
  if (config.json) return jsonReport(config.iterations, config.tokens, config.anchor, config.passes, config.warmPasses);
  console.log(
    `# loramesh mesh benchmark — ${hostname()}, ${(await import("node:os")).cpus().length} cores, node ${process.version}`,
  );
  await roundTrips(config.iterations);
  console.log(
    `\n## Generation throughput (tiny-llama, 1 worker, ${config.requests} concurrent requests × ${config.tokens} tokens, 6 adapters + base)\n`,
  );
  console.log("| mode | tokens/s | wall s |");
  console.log("|---|---|---|");
  for (const mode of ["coupled", "disaggregated"] as const) {
    const r = await throughput(mode, config.requests, config.tokens);
    console.log(`| ${mode} | ${r.tokensPerSecond.toFixed(0)} | ${r.seconds.toFixed(2)} |`);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
