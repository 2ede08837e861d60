/**
 * A loramesh cluster across namespace hosts (see netns-network.ts): Redis, the provisioner and the
 * router on host "control", each base worker on "worker<i>", each LoRA server on "lora<i>". Every
 * service listens on its host's own address and advertises it; each host has its own host id, so
 * workers and LoRA servers never pick the same-host shared-memory path. Every service gets the
 * mesh's cluster token through its environment (as under `loramesh up`), so no internal port
 * accepts anonymous calls. The entry points of the services are passed in (this package sits below
 * them in the dependency graph).
 */
import { type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { CLUSTER_TOKEN_ENV, generateClusterToken, type ListeningMessage } from "@loramesh/core";
import { UnavailableError } from "@loramesh/errors";
import { NetnsNetwork, stopChild, type NetnsHost } from "./netns-network";

export type MeshService = "router" | "provisioner" | "base-worker" | "lora-server";

export interface NetnsMeshOptions {
  /** Each service's process entry (its dist/main.js). */
  entries: Record<MeshService, string>;
  /** Resolves once the gRPC server at the address reports SERVING (the SDK's `waitForServing`). */
  waitServing: (address: string, timeoutMs: number) => Promise<void>;
  modelDir: string;
  mode: "coupled" | "disaggregated" | "hybrid";
  workers: number;
  loraServers: number;
  extraArgs?: Partial<Record<MeshService, string[]>>;
  /** Environment of the services (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** How long each service may take to start (default 60 s). */
  startTimeoutMs?: number;
  /** The mesh's cluster token (default: `$LORAMESH_CLUSTER_TOKEN`, else a fresh random one). */
  clusterToken?: string;
}

export interface MeshProcess {
  service: MeshService;
  /** The namespace host it runs on. */
  host: string;
  address: string;
  /** Its Prometheus endpoint as it reported it ("" when off; an unspecified host means the host's address). */
  metricsAddress: string;
  pid: number;
  child: ChildProcess;
}

export interface NetnsMesh {
  readonly network: NetnsNetwork;
  readonly routerAddress: string;
  readonly httpAddress: string;
  readonly redisUrl: string;
  /** The token every service was given; internal calls must carry it. */
  readonly clusterToken: string;
  readonly processes: readonly MeshProcess[];
  /** The host a service instance runs on ("worker0", "lora1", "control"). */
  host(name: string): NetnsHost;
  /** Resolves when any service exits on its own, with which and how. */
  readonly unexpectedExit: Promise<{ service: MeshService; host: string; code: number | null }>;
  stop(): Promise<void>;
}

const REDIS_PORT = 6379;
const STOP_ORDER: MeshService[] = ["router", "base-worker", "lora-server", "provisioner"];

export async function startNetnsMesh(options: NetnsMeshOptions): Promise<NetnsMesh> {
  const network = await NetnsNetwork.create();
  const dir = mkdtempSync(join(tmpdir(), "lm-netns-"));
  const timeoutMs = options.startTimeoutMs ?? 60_000;
  const baseEnv = options.env ?? process.env;
  const clusterToken = options.clusterToken ?? (baseEnv[CLUSTER_TOKEN_ENV] || generateClusterToken());
  const processes: MeshProcess[] = [];
  let stopping = false;
  let reportExit!: (e: { service: MeshService; host: string; code: number | null }) => void;
  const unexpectedExit = new Promise<{ service: MeshService; host: string; code: number | null }>((resolve) => {
    reportExit = resolve;
  });
  const stop = async (): Promise<void> => {
    stopping = true;
    // Front to back, as `loramesh up` stops: Redis and the namespaces go last.
    for (const service of STOP_ORDER)
      await Promise.all(processes.filter((p) => p.service === service).map((p) => stopChild(p.child)));
    await network.destroy();
    rmSync(dir, { recursive: true, force: true });
  };

  const start = async (
    service: MeshService,
    hostName: string,
    args: string[],
    retried = false,
  ): Promise<MeshProcess> => {
    const host = network.host(hostName);
    const child = network.spawnIn(hostName, process.execPath, [options.entries[service], ...args], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      env: { ...baseEnv, [CLUSTER_TOKEN_ENV]: clusterToken, LORAMESH_HOST_ID: host.namespace },
    });
    child.on("message", (m: { type?: string; address?: string }) => {
      if (m.type === "http-listening" && typeof m.address === "string") httpAddresses.set(child, m.address);
    });
    let started: { address: string; metricsAddress: string };
    try {
      started = await listening(child, service, timeoutMs);
    } catch (err) {
      // As `up` does: one more try after a crash signal at start-up (the known cause of a LoRA
      // server's start-up SIGSEGV is fixed, docs/mesh.md; a retry's warning means a new one); an
      // exit code is final.
      if (!(err instanceof Error && CRASHED_AT_START.has(err)) || retried) throw err;
      console.warn(`      ${service} on ${hostName} crashed during start-up (${err.message}); starting it again`);
      return start(service, hostName, args, true);
    }
    const { address, metricsAddress } = started;
    const proc: MeshProcess = { service, host: hostName, address, metricsAddress, pid: child.pid as number, child };
    processes.push(proc);
    child.once("exit", (code) => {
      if (!stopping) reportExit({ service, host: hostName, code });
    });
    await options.waitServing(address, timeoutMs);
    return proc;
  };

  try {
    const control = await network.addHost("control");
    for (let i = 0; i < options.workers; i++) await network.addHost(`worker${i}`);
    for (let i = 0; i < options.loraServers; i++) await network.addHost(`lora${i}`);
    const redisUrl = await startRedis(network, control, dir);
    const extra = options.extraArgs ?? {};
    const model = ["--model", options.modelDir];
    const listen = (h: string): string[] => ["--listen", `${network.host(h).address}:0`];
    const provisioner = await start("provisioner", "control", [
      ...listen("control"),
      "--redis-url",
      redisUrl,
      ...model,
      ...(extra.provisioner ?? []),
    ]);
    const backend = ["--provisioner", provisioner.address, "--redis-url", redisUrl, ...model];
    const pending: Promise<MeshProcess>[] = [];
    for (let i = 0; i < options.loraServers; i++)
      pending.push(
        start("lora-server", `lora${i}`, [
          ...listen(`lora${i}`),
          "--executor-id",
          `lora-${i}`,
          ...backend,
          ...(extra["lora-server"] ?? []),
        ]),
      );
    for (let i = 0; i < options.workers; i++)
      pending.push(
        start("base-worker", `worker${i}`, [
          ...listen(`worker${i}`),
          "--executor-id",
          `worker-${i}`,
          "--mode",
          options.mode,
          ...backend,
          ...(extra["base-worker"] ?? []),
        ]),
      );
    await Promise.all(pending);
    const router = await start("router", "control", [
      ...listen("control"),
      "--http-listen",
      `${control.address}:0`,
      "--provisioner",
      provisioner.address,
      ...model,
      ...(extra.router ?? []),
    ]);
    return {
      network,
      routerAddress: router.address,
      httpAddress: httpAddressOf(router.child),
      redisUrl,
      clusterToken,
      processes,
      host: (name) => network.host(name),
      unexpectedExit,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

const CRASHED_AT_START = new WeakSet<Error>();

/** The address a service reports over IPC once its gRPC server is bound. */
function listening(
  child: ChildProcess,
  service: string,
  timeoutMs: number,
): Promise<{ address: string; metricsAddress: string }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new UnavailableError(`${service} did not start within ${timeoutMs} ms`)),
      timeoutMs,
    );
    child.on("message", (m: ListeningMessage) => {
      if (m.type !== "listening") return;
      clearTimeout(timer);
      resolve({ address: m.address, metricsAddress: m.metricsAddress ?? "" });
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      const err = new UnavailableError(`${service} exited during start-up (${code ?? signal})`);
      if (signal === "SIGSEGV" || signal === "SIGBUS" || signal === "SIGILL" || signal === "SIGABRT")
        CRASHED_AT_START.add(err);
      reject(err);
    });
  });
}

/** The router's HTTP address: it reports it before its gRPC server listens, so it is known by now. */
const httpAddresses = new WeakMap<ChildProcess, string>();
function httpAddressOf(child: ChildProcess): string {
  return httpAddresses.get(child) ?? "";
}

/** Redis on the control host, reachable at its bridge address (no persistence: a test's state). */
async function startRedis(network: NetnsNetwork, host: NetnsHost, dir: string): Promise<string> {
  network.spawnIn(
    host.name,
    "redis-server",
    [
      "--bind",
      host.address,
      "--port",
      String(REDIS_PORT),
      "--save",
      "",
      "--appendonly",
      "no",
      "--protected-mode",
      "no",
      "--dir",
      dir,
      "--loglevel",
      "warning",
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  const url = `redis://${host.address}:${REDIS_PORT}`;
  // ioredis retries the connection until the server is up; the ping answers once it serves.
  const client = new Redis(url, { retryStrategy: () => 100, maxRetriesPerRequest: null });
  client.on("error", () => undefined); // refused until the server listens
  const timer = setTimeout(() => client.disconnect(), 20_000);
  try {
    await client.ping();
    return url;
  } catch (err) {
    throw new UnavailableError(`redis on ${host.name} did not start: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
    client.disconnect();
  }
}
