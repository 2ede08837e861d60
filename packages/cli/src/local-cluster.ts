/**
 * A whole loramesh cluster on this machine as separate processes: an embedded Redis (unless a
 * REDIS_URL is given), the provisioner, LoRA servers, base workers and the router. Each service
 * reports its bound address over IPC; the cluster is ready when every process answers health.
 * The cluster supervises its processes: one that exits on its own is started again at the same
 * address, with backoff and a log line, while the rest keep running.
 */
import { fork, type ChildProcess } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import {
  CLUSTER_TOKEN_ENV,
  DEFAULT_LISTEN_ADDRESS,
  generateClusterToken,
  startEmbeddedRedis,
  type EmbeddedRedis,
  type ListeningMessage,
  type Logger,
} from "@loramesh/core";
import { UnavailableError } from "@loramesh/errors";
import { waitForServing } from "@loramesh/sdk";
import { exitOf, Supervisor, type ServiceRestart } from "./supervisor";

export type { ServiceRestart } from "./supervisor";

export interface LocalClusterOptions {
  /** Router listen address (the cluster's public address). */
  routerListen: string;
  /** The router's OpenAI-compatible HTTP API address (default 127.0.0.1:0, any free port). */
  httpListen?: string;
  /** Base model directory. */
  modelDir: string;
  mode: "coupled" | "disaggregated" | "hybrid";
  /** Extra flags per service (tests use them to tune timeouts and transports). */
  extraArgs?: Partial<Record<"router" | "provisioner" | "base-worker" | "lora-server", string[]>>;
  workers: number;
  loraServers: number;
  /** Use this Redis instead of starting one. */
  redisUrl?: string;
  logger: Logger;
  /**
   * How long each process may take to start. Default: 30 s, plus for base workers the time to read
   * the checkpoint at a slow disk's 50 MB/s (a worker loads its model before it listens).
   */
  startTimeoutMs?: number;
  /** Environment of the service processes (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /**
   * The mesh's shared token; default: `$LORAMESH_CLUSTER_TOKEN` of `env`, else a fresh random one.
   * It reaches the services through their environment, never their command line.
   */
  clusterToken?: string;
}

export interface ClusterProcess {
  service: string;
  address: string;
  pid: number;
  /** Prometheus endpoint (host:port, path /metrics); empty when disabled. */
  metricsAddress: string;
}

export interface LocalCluster {
  readonly routerAddress: string;
  /** HOST:PORT of the router's OpenAI-compatible HTTP API (base URL http://HOST:PORT/v1). */
  readonly httpAddress: string;
  readonly redisUrl: string;
  /** The token internal services require (for tools and tests that call them directly). */
  readonly clusterToken: string;
  /** The running processes (a restarted one appears with its new pid). */
  readonly processes: readonly ClusterProcess[];
  /** The embedded Redis's pid (changes on restart); undefined with an external REDIS_URL. */
  readonly redisPid: number | undefined;
  /** Called each time a service (or the embedded Redis) that exited on its own serves again. */
  onRestart(listener: (restart: ServiceRestart) => void): void;
  /** Stops every process (router first, Redis last). */
  stop(): Promise<void>;
}

const SERVICE_MAIN: Record<string, string> = {
  router: require.resolve("@loramesh/router/dist/main.js"),
  provisioner: require.resolve("@loramesh/provisioner/dist/main.js"),
  "base-worker": require.resolve("@loramesh/base-worker/dist/main.js"),
  "lora-server": require.resolve("@loramesh/lora-server/dist/main.js"),
};

interface Running {
  service: string;
  /** Its flags, with the listen addresses it bound (a restart binds the same ones). */
  args: string[];
  child: ChildProcess;
  address: string;
  metricsAddress: string;
  /** The router's HTTP API address, reported before it listens on gRPC; empty for other services. */
  httpAddress: string;
}

/** The router's IPC message once its HTTP API is bound. */
interface HttpListeningMessage {
  type: "http-listening";
  address: string;
}

export async function startLocalCluster(options: LocalClusterOptions): Promise<LocalCluster> {
  const { logger } = options;
  // A service that exits is reported at once; this limit only bounds one that hangs. It is generous
  // because on an oversubscribed machine a healthy Node service can take tens of seconds to start.
  const baseTimeoutMs = options.startTimeoutMs ?? 120_000;
  const workerTimeoutMs =
    options.startTimeoutMs ?? baseTimeoutMs + Math.ceil(checkpointBytes(options.modelDir) / 50e6) * 1000;
  const baseEnv = options.env ?? process.env;
  const clusterToken = options.clusterToken ?? (baseEnv[CLUSTER_TOKEN_ENV] || generateClusterToken());
  const childEnv = { ...baseEnv, [CLUSTER_TOKEN_ENV]: clusterToken };
  const running: Running[] = [];
  // Every forked child, including ones still starting, so a failed start leaves no orphans.
  const spawned: ChildProcess[] = [];
  let redis: EmbeddedRedis | undefined;
  const supervisor = new Supervisor(logger);

  const stop = async (): Promise<void> => {
    supervisor.stop();
    // Front to back: the router stops taking requests, workers finish and close their LoRA streams,
    // then the LoRA servers and the provisioner go.
    const order = ["router", "base-worker", "lora-server", "provisioner"];
    const byOrder = [...running].sort((a, b) => order.indexOf(a.service) - order.indexOf(b.service));
    for (const service of order)
      await Promise.all(byOrder.filter((p) => p.service === service).map((p) => stopChild(p.child)));
    running.length = 0;
    await Promise.all(spawned.map((c) => stopChild(c)));
    spawned.length = 0;
    await redis?.stop();
  };

  // A start that dies by a crash signal is tried again (logged), as `up` restarts a service that
  // crashes later. The one known cause of such a start-up SIGSEGV (UCX's memory-hook self-test
  // cutting the heap, docs/mesh.md) is fixed; a retry's warning line now means a new one. An exit
  // with a code (bad flags, a taken port) is final.
  const crashedAtStart = new WeakSet<Error>();
  const start = async (service: string, args: string[]): Promise<Running> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await startOnce(service, args);
      } catch (err) {
        if (!(err instanceof Error) || !crashedAtStart.has(err) || attempt >= 3) throw err;
        logger.warn("service crashed during start-up; starting it again", { service, attempt, error: err.message });
      }
    }
  };

  const startOnce = async (service: string, args: string[]): Promise<Running> => {
    const child = fork(SERVICE_MAIN[service] as string, args, {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      env: childEnv,
    });
    spawned.push(child);
    const timeoutMs = service === "base-worker" ? workerTimeoutMs : baseTimeoutMs;
    const began = performance.now();
    // Progress while a slow start (a large model loading) goes on, so `up` never looks hung.
    const progress = setInterval(() => {
      const waited = Math.round((performance.now() - began) / 1000);
      logger.info(`waiting for ${service} to start${service === "base-worker" ? " (loading the model)" : ""}`, {
        service,
        waitedS: waited,
        limitS: Math.round(timeoutMs / 1000),
      });
    }, 10_000);
    let httpAddress = "";
    child.on("message", (message: HttpListeningMessage) => {
      if (message.type === "http-listening") httpAddress = message.address;
    });
    const listening = await new Promise<ListeningMessage>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new UnavailableError(`${service} did not start within ${timeoutMs} ms`)),
        timeoutMs,
      );
      child.on("message", (message: ListeningMessage) => {
        if (message.type === "listening") {
          clearTimeout(timer);
          resolve(message);
        }
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        const err = new UnavailableError(`${service} exited during start-up (${code ?? signal}); see its log above`);
        if (signal === "SIGSEGV" || signal === "SIGBUS" || signal === "SIGILL" || signal === "SIGABRT")
          crashedAtStart.add(err);
        reject(err);
      });
    }).finally(() => clearInterval(progress));
    const { address, metricsAddress } = listening;
    // A restart listens where this one did, so its peers' addresses stay valid.
    const bound = withFlag(withFlag(args, "--listen", address), "--http-listen", httpAddress);
    const proc = { service, args: bound, child, address, metricsAddress, httpAddress };
    running.push(proc);
    await waitForServing({ address }, baseTimeoutMs);
    logger.info("service ready", { service, address, pid: child.pid });
    return proc;
  };

  /** Restarts the service when it exits on its own; the new process replaces it in `running`. */
  const supervise = (first: Running): void => {
    let current = first;
    supervisor.watch(
      {
        service: first.service,
        restart: async () => {
          const next = await start(current.service, current.args);
          running.splice(running.indexOf(current), 1);
          current = next;
          return { pid: next.child.pid as number, exited: exitOf(next.child) };
        },
      },
      { pid: first.child.pid as number, exited: exitOf(first.child) },
    );
  };

  try {
    let redisUrl = options.redisUrl;
    if (redisUrl === undefined) {
      const embedded = await startEmbeddedRedis({ logger });
      redis = embedded;
      redisUrl = embedded.url;
      supervisor.watch(
        {
          service: "redis",
          restart: async () => {
            await embedded.restart();
            return { pid: embedded.pid, exited: embedded.exited() };
          },
        },
        { pid: embedded.pid, exited: embedded.exited() },
      );
    }
    const extra = options.extraArgs ?? {};
    const model = ["--model", options.modelDir];
    const provisioner = await start("provisioner", [
      "--listen",
      DEFAULT_LISTEN_ADDRESS,
      "--redis-url",
      redisUrl,
      ...model,
      ...(extra.provisioner ?? []),
    ]);
    const backend = ["--provisioner", provisioner.address, "--redis-url", redisUrl, ...model];
    const pending: Promise<Running>[] = [];
    for (let i = 0; i < options.loraServers; i++) {
      pending.push(
        start("lora-server", [
          "--listen",
          DEFAULT_LISTEN_ADDRESS,
          "--executor-id",
          `lora-${i}`,
          ...backend,
          ...(extra["lora-server"] ?? []),
        ]),
      );
    }
    for (let i = 0; i < options.workers; i++) {
      pending.push(
        start("base-worker", [
          "--listen",
          DEFAULT_LISTEN_ADDRESS,
          "--executor-id",
          `worker-${i}`,
          "--mode",
          options.mode,
          ...backend,
          ...(extra["base-worker"] ?? []),
        ]),
      );
    }
    await Promise.all(pending);
    const router = await start("router", [
      "--listen",
      options.routerListen,
      "--provisioner",
      provisioner.address,
      "--http-listen",
      options.httpListen ?? "127.0.0.1:0",
      ...model,
      ...(extra.router ?? []),
    ]);
    for (const proc of running) supervise(proc);
    return {
      routerAddress: router.address,
      httpAddress: router.httpAddress,
      redisUrl,
      clusterToken,
      get processes() {
        return running.map((p) => ({
          service: p.service,
          address: p.address,
          pid: p.child.pid as number,
          metricsAddress: p.metricsAddress,
        }));
      },
      get redisPid() {
        return redis?.pid;
      },
      onRestart: (listener: (restart: ServiceRestart) => void) => supervisor.onRestart(listener),
      stop,
    };
  } catch (err) {
    // Stops every child forked so far, including ones still starting (their starts then fail).
    await stop();
    throw err;
  }
}

/** The flags with `flag`'s value replaced (when present and `value` is not empty). */
function withFlag(args: readonly string[], flag: string, value: string): string[] {
  const out = [...args];
  const i = out.indexOf(flag);
  if (i >= 0 && value !== "") out[i + 1] = value;
  return out;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGCONT"); // a stopped process cannot act on SIGTERM
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  await exited;
  clearTimeout(timer);
}

/** Bytes of the model's safetensors files (0 when the directory cannot be read: the worker reports that). */
function checkpointBytes(dir: string): number {
  try {
    return readdirSync(dir)
      .filter((f) => f.endsWith(".safetensors"))
      .reduce((sum, f) => sum + statSync(join(dir, f)).size, 0);
  } catch {
    return 0;
  }
}
