/**
 * Pieces of the cold-start harness (`cold-start-harness.ts`): the adapter versions, the remote source
 * behind a simulated link, LoRA server processes with their own caches. The harness behind `pnpm bench:cold-start` (and its smoke test): time to first token of
 * the first request to an adapter that no executor serving it has, through a real disaggregated mesh
 * (router, provisioner, one base worker, two LoRA servers as separate processes), by where the
 * executor gets the files:
 *
 * - source: the adapter was just registered from a remote source (the test hub's HTTP layout or the
 *   test S3 server, behind a simulated WAN link) and nothing holds it: the executor fetches it;
 * - peer: the same version is already resident on another LoRA server (registered there under
 *   another name): the executor streams it from that peer;
 * - both with the LoRA server loading layer by layer and whole;
 * - warm: a second request to the adapter once it is resident, the reference.
 *
 * Every LoRA server has its own host cache (as if on its own host), so nothing comes from a cache.
 * The holder ("peer-holder") gets a pool just big enough for the versions it holds, so every trial
 * adapter is placed on the other server ("executor-a"); the harness checks where each load's files
 * came from (the executor's GetStats counters) and that the tokens of each cold request equal those
 * of a warm one (and, for a peer load, those the holder computes), so a run that measured the wrong
 * path, or served wrong tokens, fails instead of printing a number.
 */
import { fork, type ChildProcess } from "node:child_process";
import { shapeByName, type LocalCluster, type SynthShape } from "@loramesh/cli";
import { createClient } from "@loramesh/core";
import { unary } from "@loramesh/mesh";
import { LoraServerServiceClient, SERVICE_NAMES, type LoraServerStats } from "@loramesh/proto";
import { PEFT_CONFIG, PEFT_WEIGHTS } from "@loramesh/sources";
import { startAdapterFileServer, startTestS3Server } from "@loramesh/testing";

export type SourceKind = "hf" | "s3";

export interface ColdStartOptions {
  trials: number;
  layers: number;
  hidden: number;
  rank: number;
  /** The simulated source link: bandwidth in MiB/s (0: loopback as it is) and latency per request. */
  sourceMiBps: number;
  sourceLatencyMs: number;
  source: SourceKind;
  /** Tokens generated per request (the first one is what is timed; the rest are checked). */
  maxTokens: number;
  /** Where progress goes (stderr in the bench); silent by default. */
  progress?: (line: string) => void;
}

export type CaseName = "source" | "peer" | "source_layerwise" | "peer_layerwise" | "warm";
export const CASE_NAMES: readonly CaseName[] = ["source", "peer", "source_layerwise", "peer_layerwise", "warm"];
/** Where each case's executor must have got the files ("resident": it already had the adapter). */
export const EXPECTED_ORIGIN: Record<CaseName, string> = {
  source: "source",
  peer: "peer",
  source_layerwise: "source",
  peer_layerwise: "peer",
  warm: "resident",
};

export interface CaseCheck {
  /** Where the executor got each cold adapter's files (GetStats deltas); "resident" for warm. */
  origins: string[];
  /**
   * Every request's tokens and their log-probabilities equal its references (the warm repeat, and
   * the holder's for a peer load), bit for bit.
   */
  tokensMatch: boolean;
  /** Every request's output differs from the base model's (the adapter was applied). */
  differsFromBase: boolean;
  /** Every sample's files came from where its case says (EXPECTED_ORIGIN). */
  originsMatch: boolean;
  /** Tokens of the first sample, for the record. */
  tokens: number[];
}

export interface ColdStartResult {
  model: { layers: number; hidden: number; dtype: "bf16"; vocab: number };
  adapter_mib: number;
  adapter: { rank: number; targets: readonly string[] };
  ttft_ms: Record<CaseName, number>;
  samples_ms: Record<CaseName, number[]>;
  checks: Record<CaseName, CaseCheck>;
  /** The base model's tokens for the same prompt: what the adapter's tokens differ from. */
  base_tokens: number[];
  trials: number;
  source: { kind: SourceKind; mib_per_s: number; latency_ms: number };
  machine: { host: string; cores: number; cpu: string; node: string; loadavg_1m_at_start: number };
}

export interface Sample {
  ms: number;
  tokens: number[];
  /** Each token's log-probability. */
  logprobs: number[];
  /** Outputs (tokens with log-probabilities) this one must equal: a warm repeat; the holder's for a peer load. */
  references: string[];
  origin: string;
}

export const MiB = 1024 * 1024;
// The LoRA server as `loramesh up` starts it: resolved through the CLI, which depends on it.
const LORA_SERVER_MAIN = require.resolve("@loramesh/lora-server/dist/main.js", {
  paths: [require.resolve("@loramesh/cli")],
});
export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/** A llama with TinyLlama's proportions, `layers` deep and `hidden` wide (as the layer-wise bench). */
export function benchShape(layers: number, hidden: number): SynthShape {
  return {
    ...shapeByName("llama-tiny"),
    name: `llama-${layers}x${hidden}`,
    hiddenSize: hidden,
    intermediateSize: Math.round((hidden * 2.75) / 32) * 32,
    numLayers: layers,
    numHeads: hidden / 32,
    numKvHeads: hidden / 128,
  };
}

/**
 * Versions of one adapter: the same weights with the last element set to a small distinct bf16
 * value, so every trial has its own content hash (no cache anywhere can have it) and loads the same.
 */
export class Versions {
  private next = 0;
  constructor(
    private readonly config: Buffer,
    private readonly weights: Buffer,
  ) {}

  make(): Map<string, Buffer> {
    const w = Buffer.from(this.weights);
    const f32 = new Float32Array([(++this.next % 4096) / 8192]);
    w.writeUInt16LE(new Uint32Array(f32.buffer)[0]! >>> 16, w.length - 2);
    return new Map([
      [PEFT_CONFIG, this.config],
      [PEFT_WEIGHTS, w],
    ]);
  }
}

/** The remote source the adapters are registered from, behind the simulated link. */
export interface Source {
  env: NodeJS.ProcessEnv;
  /** Publishes a version under `name`; returns its URI. */
  publish(name: string, files: Map<string, Buffer>): string;
  close(): Promise<void>;
}

export async function startSource(options: ColdStartOptions): Promise<Source> {
  const link = { bytesPerSecond: options.sourceMiBps * MiB, latencyMs: options.sourceLatencyMs };
  if (options.source === "s3") {
    const s3 = await startTestS3Server(undefined, undefined, link);
    const bucket = new Map<string, Buffer>();
    s3.buckets.set("bench", bucket);
    return {
      env: {
        AWS_ENDPOINT_URL: s3.endpoint,
        AWS_REGION: "us-east-1",
        AWS_ACCESS_KEY_ID: s3.accessKeyId,
        AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
      },
      publish: (name, files) => {
        for (const [f, b] of files) bucket.set(`${name}/${f}`, b);
        return `s3://bench/${name}`;
      },
      close: () => s3.close(),
    };
  }
  const hub = await startAdapterFileServer({ link });
  return {
    env: { HF_ENDPOINT: hub.url },
    publish: (name, files) => {
      hub.hub.set(`bench/${name}`, new Map([["main", files]]));
      return `hf://bench/${name}`;
    },
    close: () => hub.close(),
  };
}

/** A LoRA server process of its own (own executor id, host cache and pool size). */
export interface LoraProcess {
  address: string;
  stats(): Promise<LoraServerStats>;
  stop(): Promise<void>;
}

export async function startLoraServer(
  cluster: LocalCluster,
  env: NodeJS.ProcessEnv,
  modelDir: string,
  executorId: string,
  cacheDir: string,
  capacityMiB: number,
): Promise<LoraProcess> {
  const provisioner = cluster.processes.find((p) => p.service === "provisioner")?.address as string;
  const args = ["--listen", "127.0.0.1:0", "--provisioner", provisioner, "--redis-url", cluster.redisUrl];
  args.push("--model", modelDir, "--executor-id", executorId, "--adapter-cache", cacheDir);
  args.push("--capacity-mib", String(capacityMiB));
  const child: ChildProcess = fork(LORA_SERVER_MAIN, args, {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
    env,
  });
  const address = await new Promise<string>((resolve, reject) => {
    child.on("message", (m: { type?: string; address?: string }) => {
      if (m.type === "listening" && m.address) resolve(m.address);
    });
    child.once("exit", (code) => reject(new Error(`lora-server ${executorId} exited (${code})`)));
  });
  const client = createClient(LoraServerServiceClient, address, { service: SERVICE_NAMES.loraServer[0] });
  return {
    address,
    // eslint-disable-next-line @typescript-eslint/unbound-method -- unary() re-binds it to its client
    stats: () => unary<object, LoraServerStats>(client.getStats, client, {}),
    stop: async () => {
      client.close();
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

/** Where the executor's last load got its files, from its counters before and after. */
export function originOf(before: LoraServerStats, after: LoraServerStats): string {
  if (after.adapterFilesFromSource > before.adapterFilesFromSource) return "source";
  if (after.adapterFilesFromPeer > before.adapterFilesFromPeer) return "peer";
  if (after.adapterFilesFromCache > before.adapterFilesFromCache) return "cache";
  return "none";
}
