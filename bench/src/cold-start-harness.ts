/**
 * The cold-start harness behind `pnpm bench:cold-start` (and its smoke test): time to first token of
 * the first request to an adapter that no executor serving it has, through a real disaggregated mesh
 * (router, provisioner, one base worker, two LoRA servers as separate processes), by where the
 * executor gets the files:
 *
 * - source: the adapter was just registered from a remote source (the test hub's HTTP layout or the
 *   test S3 server, behind a simulated WAN link) and nothing holds it: the executor fetches it;
 * - peer: the same version is already resident on another LoRA server (registered there under
 *   another name): the executor streams it from that peer;
 * - both with the LoRA server loading layer by layer and whole (one mesh each);
 * - warm: a second request to the adapter once it is resident, the reference.
 *
 * Every LoRA server has its own host cache (as if on its own host), and every trial adapter is a
 * version of its own, so nothing comes from a cache. The holder ("peer-holder") gets a pool just
 * big enough for the versions it holds, so every trial adapter is placed on the other server
 * ("executor-a"). The harness checks where each load's files came from (the executor's GetStats
 * counters) and that the tokens of each cold request equal those of a warm one (and, for a peer
 * load, those the holder computes), so a run that measured the wrong path, or served wrong tokens,
 * fails instead of printing a number.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { cpus, hostname, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { LORA_TARGETS, startLocalCluster, synthModel, type LocalCluster } from "@loramesh/cli";
import { CLUSTER_TOKEN_ENV, clusterToken, createClient, createLogger, generateClusterToken } from "@loramesh/core";
import { unary } from "@loramesh/mesh";
import {
  AdapterState,
  ProvisionerServiceClient,
  SERVICE_NAMES,
  type GetPlacementRequest,
  type Placement,
} from "@loramesh/proto";
import { LoraMeshClient } from "@loramesh/sdk";
import { PEFT_CONFIG, PEFT_WEIGHTS } from "@loramesh/sources";
import { waitFor } from "@loramesh/testing";
import {
  benchShape,
  CASE_NAMES,
  EXPECTED_ORIGIN,
  median,
  MiB,
  originOf,
  startLoraServer,
  startSource,
  Versions,
  type CaseCheck,
  type CaseName,
  type ColdStartOptions,
  type ColdStartResult,
  type LoraProcess,
  type Sample,
  type Source,
} from "./cold-start-setup";

export {
  CASE_NAMES,
  EXPECTED_ORIGIN,
  type CaseName,
  type ColdStartOptions,
  type ColdStartResult,
} from "./cold-start-setup";

const HOLDER = "peer-holder";
const EXECUTOR = "executor-a";

interface Fixture {
  modelDir: string;
  versions: Versions;
  source: Source;
  /** The adapter's pool size (f32), as placement counts it. */
  adapterPoolMiB: number;
  scratch: string;
  options: ColdStartOptions;
  /** The base model's output for the prompt (no adapter): tokens, and their fingerprint. */
  base: string;
  baseTokens: number[];
}

/** One mesh: the holder with its versions, the executor the trials land on, a client. */
interface Mesh {
  cluster: LocalCluster;
  holder: LoraProcess;
  executor: LoraProcess;
  client: LoraMeshClient;
  /** Source URIs of the versions the holder has, one per trial. */
  held: string[];
  heldNames: string[];
}

function promptIds(): number[] {
  return [1, ...Array.from({ length: 32 }, (_, i) => 3 + ((i * 37) % 500))]; // within every shape's vocabulary
}

/** Sends one greedy request; returns the time to its first token and every token. */
async function generate(
  client: LoraMeshClient,
  adapter: string,
  maxTokens: number,
): Promise<Omit<Sample, "references" | "origin">> {
  const t0 = performance.now();
  const stream = client.generate({
    prompt: { $case: "tokenIds", value: { ids: promptIds() } },
    adapter,
    sampling: { maxTokens, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true, logprobs: 0 },
  });
  let first: number | undefined;
  const tokens: number[] = [];
  const logprobs: number[] = [];
  for await (const d of stream) {
    if (first === undefined && d.tokenIds.length > 0) first = performance.now();
    tokens.push(...d.tokenIds);
    logprobs.push(...d.logprobs.map((l) => l.logprob));
  }
  return { ms: (first ?? performance.now()) - t0, tokens, logprobs };
}

async function registerReady(client: LoraMeshClient, name: string, uri: string): Promise<void> {
  await client.registerAdapter(name, uri);
  for await (const _ of client.watchAdapterLoad(name)) void _;
  const adapter = await client.getAdapter(name);
  if (adapter.state !== AdapterState.ADAPTER_STATE_READY) throw new Error(`${name} is not ready: ${adapter.error}`);
}

async function waitForExecutor(cluster: LocalCluster, executorId: string): Promise<void> {
  const address = cluster.processes.find((p) => p.service === "provisioner")?.address as string;
  const provisioner = createClient(ProvisionerServiceClient, address, { service: SERVICE_NAMES.provisioner[0] });
  try {
    await waitFor(
      async () => {
        // eslint-disable-next-line @typescript-eslint/unbound-method -- unary() re-binds it to its client
        const p = await unary<GetPlacementRequest, Placement>(provisioner.getPlacement, provisioner, {
          adapterIds: [],
        });
        return p.executors.some((e) => e.executorId === executorId) ? true : undefined;
      },
      120_000,
      `${executorId} to register`,
    );
  } finally {
    provisioner.close();
  }
}

/** Starts a mesh whose holder has `trials` versions resident and whose executor has nothing. */
async function startMesh(f: Fixture, layerwise: boolean, token: string): Promise<Mesh> {
  const tag = layerwise ? "lw" : "whole";
  const dir = (name: string): string => {
    const d = join(f.scratch, `${tag}-${name}`);
    mkdirSync(d, { recursive: true });
    return d;
  };
  const env = {
    ...process.env,
    ...f.source.env,
    [CLUSTER_TOKEN_ENV]: token,
    LORAMESH_ADAPTER_CACHE: dir("provisioner-cache"),
    LORAMESH_LAYERWISE_LOADING: String(layerwise),
  };
  const cluster = await startLocalCluster({
    routerListen: "127.0.0.1:0",
    modelDir: f.modelDir,
    mode: "disaggregated",
    workers: 1,
    loraServers: 0,
    logger: createLogger({ level: "error" }),
    startTimeoutMs: 300_000, // a slow start on a busy machine is not what is measured
    env,
    clusterToken: token,
    // No periodic rebalance: it could move the holder's versions to the executor mid-run.
    extraArgs: { router: ["--adapter-wait-ms", "300000"], provisioner: ["--rebalance-interval-ms", "86400000"] },
  });
  const started: LoraProcess[] = [];
  const client = new LoraMeshClient({ address: cluster.routerAddress, defaultDeadlineMs: 600_000 });
  try {
    // Room for exactly the held versions (plus half of one): new adapters cannot go to the holder.
    const capacity = Math.ceil((f.options.trials + 0.5) * f.adapterPoolMiB);
    const holder = await startLoraServer(cluster, env, f.modelDir, HOLDER, dir("holder-cache"), capacity);
    started.push(holder);
    await waitForExecutor(cluster, HOLDER);
    const held: string[] = [];
    const heldNames: string[] = [];
    for (let t = 0; t < f.options.trials; t++) {
      const uri = f.source.publish(`held-${tag}-${t}`, f.versions.make());
      await registerReady(client, `held-${tag}-${t}`, uri);
      held.push(uri);
      heldNames.push(`held-${tag}-${t}`);
    }
    const executor = await startLoraServer(cluster, env, f.modelDir, EXECUTOR, dir("executor-cache"), 4096);
    started.push(executor);
    await waitForExecutor(cluster, EXECUTOR);
    // Warm-up (connections, the base model's pages); its tokens show what the adapters change.
    const base = await generate(client, "", f.options.maxTokens);
    f.base = fingerprint(base);
    f.baseTokens = base.tokens;
    return { cluster, holder, executor, client, held, heldNames };
  } catch (err) {
    client.close();
    for (const p of started) await p.stop();
    await cluster.stop();
    throw err;
  }
}

async function stopMesh(mesh: Mesh): Promise<void> {
  mesh.client.close();
  await mesh.executor.stop();
  await mesh.holder.stop();
  await mesh.cluster.stop();
}

/** Registers `name` from `uri`, sends the first request at once, then a warm one; deletes it. */
async function coldThenWarm(
  f: Fixture,
  mesh: Mesh,
  name: string,
  uri: string,
): Promise<{ cold: Sample; warm: Sample }> {
  await mesh.client.registerAdapter(name, uri);
  const before = await mesh.executor.stats();
  const cold = await generate(mesh.client, name, f.options.maxTokens);
  const after = await mesh.executor.stats();
  const { adapterId } = await mesh.client.getAdapter(name);
  if (!after.residentAdapterIds.includes(adapterId))
    throw new Error(`${name} was not loaded on ${EXECUTOR} (resident there: ${after.residentAdapterIds.join(", ")})`);
  const warm = await generate(mesh.client, name, f.options.maxTokens);
  await mesh.client.deleteAdapter(name);
  return {
    cold: { ...cold, references: [fingerprint(warm)], origin: originOf(before, after) },
    warm: { ...warm, references: [fingerprint(cold)], origin: "resident" },
  };
}

async function runMesh(f: Fixture, layerwise: boolean, token: string, into: Record<CaseName, Sample[]>): Promise<void> {
  const mesh = await startMesh(f, layerwise, token);
  const suffix = layerwise ? "_layerwise" : "";
  try {
    for (let t = 0; t < f.options.trials; t++) {
      const tag = `${layerwise ? "lw" : "whole"}-${t}`;
      const fromSource = await coldThenWarm(
        f,
        mesh,
        `source-${tag}`,
        f.source.publish(`new-${tag}`, f.versions.make()),
      );
      into[`source${suffix}` as CaseName].push(fromSource.cold);
      // The same version as a held one, under another name: the executor's load names the holder.
      const fromPeer = await coldThenWarm(f, mesh, `peer-${tag}`, mesh.held[t] as string);
      const holder = fingerprint(await generate(mesh.client, mesh.heldNames[t] as string, f.options.maxTokens));
      into[`peer${suffix}` as CaseName].push({
        ...fromPeer.cold,
        references: [...fromPeer.cold.references, holder],
      });
      into.warm.push(fromSource.warm, fromPeer.warm);
      f.options.progress?.(
        `${layerwise ? "layer-wise" : "whole"} trial ${t}: source ${fromSource.cold.ms.toFixed(0)} ms (${fromSource.cold.origin}), peer ${fromPeer.cold.ms.toFixed(0)} ms (${fromPeer.cold.origin}), warm ${fromSource.warm.ms.toFixed(0)} ms`,
      );
    }
  } finally {
    await stopMesh(mesh);
  }
}

/** A request's output to compare: each token with its log-probability (the adapter moves these). */
function fingerprint(s: { tokens: number[]; logprobs: number[] }): string {
  return s.tokens.map((t, i) => `${t}:${s.logprobs[i]}`).join(",");
}

function check(c: CaseName, xs: Sample[], maxTokens: number, base: string): CaseCheck {
  return {
    origins: xs.map((s) => s.origin),
    originsMatch: xs.length > 0 && xs.every((s) => s.origin === EXPECTED_ORIGIN[c]),
    tokensMatch:
      xs.length > 0 &&
      xs.every(
        (s) =>
          s.tokens.length === maxTokens &&
          s.logprobs.length === maxTokens &&
          s.references.every((r) => r === fingerprint(s)),
      ),
    differsFromBase: xs.length > 0 && xs.every((s) => fingerprint(s) !== base),
    tokens: xs[0]?.tokens ?? [],
  };
}

function summarize(f: Fixture, samples: Record<CaseName, Sample[]>, adapterMiB: number, load: number): ColdStartResult {
  const shape = benchShape(f.options.layers, f.options.hidden);
  const pick = <T>(fn: (xs: Sample[]) => T): Record<CaseName, T> =>
    Object.fromEntries(CASE_NAMES.map((c) => [c, fn(samples[c])])) as Record<CaseName, T>;
  return {
    model: { layers: shape.numLayers, hidden: shape.hiddenSize, dtype: "bf16", vocab: shape.vocabSize },
    adapter_mib: Number(adapterMiB.toFixed(1)),
    adapter: { rank: f.options.rank, targets: LORA_TARGETS },
    ttft_ms: pick((xs) => Number(median(xs.map((s) => s.ms)).toFixed(1))),
    samples_ms: pick((xs) => xs.map((s) => Number(s.ms.toFixed(1)))),
    checks: Object.fromEntries(CASE_NAMES.map((c) => [c, check(c, samples[c], f.options.maxTokens, f.base)])) as Record<
      CaseName,
      CaseCheck
    >,
    base_tokens: f.baseTokens,
    trials: f.options.trials,
    source: { kind: f.options.source, mib_per_s: f.options.sourceMiBps, latency_ms: f.options.sourceLatencyMs },
    machine: {
      host: hostname(),
      cores: cpus().length,
      cpu: cpus()[0]?.model ?? "",
      node: process.version,
      loadavg_1m_at_start: Number(load.toFixed(2)),
    },
  };
}

/** Runs every case (two meshes, one after the other) and returns medians, samples and checks. */
export async function runColdStart(options: ColdStartOptions): Promise<ColdStartResult> {
  const load = loadavg()[0] ?? 0;
  const scratch = mkdtempSync(join(tmpdir(), "lm-cold-start-"));
  const source = await startSource(options);
  try {
    synthModel(scratch, {
      shape: benchShape(options.layers, options.hidden),
      dtype: "bf16",
      adapters: [{ name: "cold", rank: options.rank, targets: LORA_TARGETS }],
      gguf: [],
    });
    const adapterDir = join(scratch, "adapters", "cold");
    const weights = readFileSync(join(adapterDir, PEFT_WEIGHTS));
    const adapterMiB = statSync(join(adapterDir, PEFT_WEIGHTS)).size / MiB;
    const f: Fixture = {
      modelDir: join(scratch, "model"),
      versions: new Versions(readFileSync(join(adapterDir, PEFT_CONFIG)), weights),
      source,
      adapterPoolMiB: adapterMiB * 2, // bf16 on disk, f32 in the pool
      scratch,
      options,
      baseTokens: [],
      base: "",
    };
    if (f.adapterPoolMiB <= 2)
      throw new Error(`the adapter is too small (${f.adapterPoolMiB.toFixed(2)} MiB in f32) to fill the holder's pool`);
    const samples = Object.fromEntries(CASE_NAMES.map((c) => [c, [] as Sample[]])) as Record<CaseName, Sample[]>;
    // The harness's own clients (placement, GetStats) send this process's token: the mesh's.
    const token = clusterToken() || generateClusterToken();
    const previous = process.env[CLUSTER_TOKEN_ENV];
    process.env[CLUSTER_TOKEN_ENV] = token;
    try {
      await runMesh(f, false, token, samples);
      await runMesh(f, true, token, samples);
    } finally {
      if (previous === undefined) delete process.env[CLUSTER_TOKEN_ENV];
      else process.env[CLUSTER_TOKEN_ENV] = previous;
    }
    return summarize(f, samples, adapterMiB, load);
  } finally {
    await source.close();
    rmSync(scratch, { recursive: true, force: true });
  }
}
