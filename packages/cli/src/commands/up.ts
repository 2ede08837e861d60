import { readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  addressOption,
  booleanOption,
  DEFAULT_ROUTER_ADDRESS,
  createLogger,
  enumOption,
  formatOptionsHelp,
  installGracefulShutdown,
  intOption,
  loadConfig,
  stringOption,
} from "@loramesh/core";
import { AdapterState } from "@loramesh/proto";
import { LoraMeshClient } from "@loramesh/sdk";
import type { Command } from "../command";
import { startLocalCluster } from "../local-cluster";

/** The bundled small model and its adapters (deploy/models). */
export const BUNDLED_MODEL = resolve(__dirname, "..", "..", "..", "..", "deploy", "models", "tiny-llama");
export const BUNDLED_ADAPTERS = resolve(__dirname, "..", "..", "..", "..", "deploy", "models", "tiny-llama-adapters");

const options = {
  listen: addressOption({
    flag: "listen",
    env: "LORAMESH_ROUTER",
    default: DEFAULT_ROUTER_ADDRESS,
    description: "address the router serves the public API on",
  }),
  httpListen: addressOption({
    flag: "http-listen",
    env: "LORAMESH_HTTP_LISTEN",
    default: "127.0.0.1:8000",
    description: "address of the router's OpenAI-compatible HTTP API (port 0: any free port)",
  }),
  model: stringOption({
    flag: "model",
    env: "LORAMESH_MODEL",
    default: "",
    description: "base model directory (default: the bundled tiny-llama)",
  }),
  mode: enumOption({
    flag: "mode",
    default: "disaggregated",
    values: ["coupled", "disaggregated", "hybrid"] as const,
    description: "where LoRA runs",
  }),
  workers: intOption({ flag: "workers", default: 1, min: 1, max: 64, description: "base-worker processes" }),
  loraServers: intOption({ flag: "lora-servers", default: 1, min: 0, max: 64, description: "LoRA-server processes" }),
  noAdapters: booleanOption({ flag: "no-adapters", description: "do not register the bundled adapters" }),
  logFormat: enumOption({
    flag: "log-format",
    env: "LOG_FORMAT",
    default: "auto",
    values: ["auto", "pretty", "json"] as const,
    description: "service logs on stderr: human-readable, JSON lines, or auto (pretty on a terminal)",
  }),
  redisUrl: stringOption({
    flag: "redis-url",
    secret: true,
    env: "REDIS_URL",
    default: "",
    description: "use this Redis; when empty, start the system's redis-server on a private socket",
  }),
};

/** `loramesh up`: the local cluster, in the foreground until Ctrl-C or SIGTERM. */
export const upCommand: Command = {
  name: "up",
  summary: "start a local cluster (Redis, provisioner, LoRA servers, base workers, router)",
  help: () =>
    `Usage: loramesh up [options]\n\nStarts every service as its own process, registers the bundled adapters (for the bundled model),\nand prints "loramesh ready HOST:PORT" once all answer health, then "openai http://HOST:PORT/v1". Ctrl-C or SIGTERM stops all of them.\n\nOptions:\n${formatOptionsHelp(options)}\n`,
  async run(argv) {
    const { config } = loadConfig(options, argv);
    // Every service logs to the terminal we inherit; they all render the same way.
    const logFormat = config.logFormat === "auto" ? (process.stderr.isTTY ? "pretty" : "json") : config.logFormat;
    const logger = createLogger({ format: logFormat, fields: { service: "up" } });
    const bundled = config.model === "";
    const modelDir = bundled ? BUNDLED_MODEL : resolve(config.model);
    const cluster = await startLocalCluster({
      routerListen: config.listen,
      httpListen: config.httpListen,
      modelDir,
      mode: config.mode,
      workers: config.workers,
      loraServers: config.loraServers,
      ...(config.redisUrl !== "" ? { redisUrl: config.redisUrl } : {}),
      logger,
      env: { ...process.env, LOG_FORMAT: logFormat },
    });
    for (const proc of cluster.processes)
      process.stdout.write(`service ${proc.service} ${proc.address} pid ${proc.pid}\n`);
    for (const proc of cluster.processes) {
      if (proc.metricsAddress) process.stdout.write(`metrics ${proc.service} http://${proc.metricsAddress}/metrics\n`);
    }
    if (bundled && !config.noAdapters) {
      const client = new LoraMeshClient({ address: cluster.routerAddress });
      try {
        for (const name of readdirSync(BUNDLED_ADAPTERS, { withFileTypes: true })
          .filter((d) => d.isDirectory())
          .map((d) => d.name)
          .sort()) {
          await client.registerAdapter(name, join(BUNDLED_ADAPTERS, name));
          for await (const _ of client.watchAdapterLoad(name)) void _;
          const state = (await client.getAdapter(name)).state;
          process.stdout.write(
            `adapter ${name} ${state === AdapterState.ADAPTER_STATE_READY ? "ready" : "not ready"}\n`,
          );
        }
      } catch (err) {
        await cluster.stop();
        throw err;
      } finally {
        client.close();
      }
    }
    process.stdout.write(`loramesh ready ${cluster.routerAddress}\n`);
    process.stdout.write(`openai http://${cluster.httpAddress}/v1\n`);
    return await new Promise<number>((resolve_) => {
      installGracefulShutdown(() => cluster.stop(), { logger, timeoutMs: 30_000, exit: resolve_ });
      // A wrapper such as `pnpm` may exit on SIGTERM without passing it on; when our parent is gone,
      // stop as if we had been signalled.
      const parent = process.ppid;
      setInterval(() => {
        if (process.ppid !== parent) process.kill(process.pid, "SIGTERM");
      }, 500).unref();
      // A service that exits on its own is restarted by the cluster (with a log line); `up` keeps running.
    });
  },
};
