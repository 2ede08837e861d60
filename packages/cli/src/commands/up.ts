import {
  addressOption,
  createLogger,
  formatOptionsHelp,
  installGracefulShutdown,
  intOption,
  loadConfig,
  stringOption,
} from "@loramesh/core";
import type { Command } from "../command";
import { startLocalCluster } from "../local-cluster";

const options = {
  listen: addressOption({
    flag: "listen",
    env: "LORAMESH_ROUTER",
    default: "127.0.0.1:50051",
    description: "address the router serves the public API on",
  }),
  workers: intOption({ flag: "workers", default: 1, min: 1, max: 64, description: "base-worker processes" }),
  loraServers: intOption({ flag: "lora-servers", default: 1, min: 0, max: 64, description: "LoRA-server processes" }),
  redisUrl: stringOption({
    flag: "redis-url",
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
    `Usage: loramesh up [options]\n\nStarts every service as its own process and prints "loramesh ready HOST:PORT" once all\nanswer health. Ctrl-C or SIGTERM stops all of them.\n\nOptions:\n${formatOptionsHelp(options)}\n`,
  async run(argv) {
    const { config } = loadConfig(options, argv);
    const logger = createLogger({ fields: { service: "up" } });
    const cluster = await startLocalCluster({
      routerListen: config.listen,
      workers: config.workers,
      loraServers: config.loraServers,
      ...(config.redisUrl !== "" ? { redisUrl: config.redisUrl } : {}),
      logger,
    });
    for (const proc of cluster.processes)
      process.stdout.write(`service ${proc.service} ${proc.address} pid ${proc.pid}\n`);
    process.stdout.write(`loramesh ready ${cluster.routerAddress}\n`);
    return await new Promise<number>((resolve) => {
      installGracefulShutdown(() => cluster.stop(), { logger, timeoutMs: 30_000, exit: resolve });
      // A wrapper such as `pnpm` may exit on SIGTERM without passing it on; when our parent is gone,
      // stop as if we had been signalled.
      const parent = process.ppid;
      setInterval(() => {
        if (process.ppid !== parent) process.kill(process.pid, "SIGTERM");
      }, 500).unref();
      void cluster.unexpectedExit.then(async ({ service, code, signal }) => {
        logger.error("a service exited unexpectedly; stopping the cluster", { service, code, signal });
        await cluster.stop();
        resolve(1);
      });
    });
  },
};
