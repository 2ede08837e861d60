/**
 * The life of a service process: flags and environment → validated config → gRPC server with
 * health and reflection → SERVING → graceful stop on SIGTERM/SIGINT. Each service's `main.ts` is a
 * call to `runServiceProcess` with its options and a `create` function.
 */
import { isLoraMeshError, describeError } from "@loramesh/errors";
import { CLUSTER_TOKEN_ENV, MIN_CLUSTER_TOKEN_LENGTH, setClusterToken } from "./cluster-auth";
import { formatOptionsHelp, loadConfig, type ConfigOf, type OptionSpec, type OptionSpecs } from "./config";
import { startGrpcServer, type ServiceRegistration } from "./grpc-server";
import { createLogger, type Logger } from "./logging";
import { installGracefulShutdown } from "./shutdown";
import { serveMetrics, telemetry } from "@loramesh/telemetry";

/** What a service hands back to the runner once its dependencies are up. */
export interface ServiceInstance {
  services: ServiceRegistration[];
  /** Releases the service's resources (connections, workers) after the server stopped. */
  close(): Promise<void>;
  /** Called once the server is bound and SERVING, with its address (e.g. to register with peers). */
  onServing?(address: string): void;
  /**
   * Called once SERVING with a switch for the health status: a service whose dependency goes away
   * (the provisioner's Redis) reports NOT_SERVING until it is back.
   */
  watchHealth?(setServing: (serving: boolean) => void): void;
}

/** Message a service process sends to its parent over IPC once it serves (used by `loramesh up`). */
export interface ListeningMessage {
  type: "listening";
  service: string;
  address: string;
  pid: number;
  /** host:port of the Prometheus /metrics endpoint; empty when disabled. */
  metricsAddress: string;
}

export interface ServiceProcessOptions<S extends OptionSpecs> {
  /** Service name for logs and help, e.g. `router`. */
  name: string;
  /** One line saying what the service does. */
  summary: string;
  /** Options; must include `listen`. */
  options: S;
  create(config: ConfigOf<S>, logger: Logger): Promise<ServiceInstance>;
  argv?: readonly string[];
  /**
   * An internal service (provisioner, worker, LoRA server): its calls need the cluster token. The
   * router is the public door and checks API keys instead.
   */
  internal?: boolean;
}

/** The option every service has: the cluster token its clients send (and internal services check). */
const clusterTokenOption = {
  clusterToken: {
    flag: "cluster-token",
    env: CLUSTER_TOKEN_ENV,
    default: "",
    valueName: "TOKEN",
    description: `shared secret of the mesh (at least ${MIN_CLUSTER_TOKEN_LENGTH} characters; prefer the environment variable, flags show in ps)`,
    // The problem never quotes the value: it is a secret.
    parse: (raw: string) =>
      raw === "" || (/^[\x21-\x7e]+$/.test(raw) && raw.length >= MIN_CLUSTER_TOKEN_LENGTH && raw.length <= 1024)
        ? { value: raw }
        : { problem: `must be ${MIN_CLUSTER_TOKEN_LENGTH} to 1024 printable characters (value not shown)` },
  } satisfies OptionSpec<string>,
};

/** Loads the service's options plus the cluster token; the token goes to this process's clients. */
function loadServiceConfig<S extends OptionSpecs>(
  specs: S,
  argv: readonly string[],
): { config: ConfigOf<S>; token: string } {
  const { config } = loadConfig({ ...specs, ...clusterTokenOption }, argv);
  const { clusterToken: token, ...rest } = config as Record<string, unknown>;
  setClusterToken(token as string);
  return { config: rest as ConfigOf<S>, token: token as string };
}

/** Runs a service until a signal stops it. Configuration errors exit with status 2 and a clear list. */
export async function runServiceProcess<S extends OptionSpecs>(options: ServiceProcessOptions<S>): Promise<void> {
  const argv = options.argv ?? process.argv.slice(2);
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(
      `loramesh ${options.name}: ${options.summary}\n\nOptions:\n${formatOptionsHelp({ ...options.options, ...clusterTokenOption })}\n`,
    );
    return;
  }
  const logger = createLogger({ fields: { service: options.name } });
  try {
    const { config, token } = loadServiceConfig(options.options, argv);
    if (options.internal && token === "")
      logger.warn(
        `no cluster token (--cluster-token or $${CLUSTER_TOKEN_ENV}): this internal service accepts anonymous calls`,
      );
    const listen = (config as Record<string, unknown>)["listen"];
    if (typeof listen !== "string") throw new Error(`service ${options.name} declares no listen option`);
    const instance = await options.create(config, logger);
    const server = await startGrpcServer({
      address: listen,
      services: instance.services,
      logger,
      ...(options.internal ? { clusterToken: token } : {}),
    });
    // Prometheus metrics on METRICS_ADDRESS (default: loopback, any free port; "off" disables).
    const metricsSetting = process.env["METRICS_ADDRESS"] ?? "127.0.0.1:0";
    const metrics = metricsSetting === "off" ? undefined : await serveMetrics(metricsSetting);
    installGracefulShutdown(
      async () => {
        await server.stop();
        await instance.close();
        await metrics?.close();
        await telemetry()
          .shutdown()
          .catch(() => undefined);
      },
      { logger },
    );
    server.setServing(true);
    instance.onServing?.(server.address);
    instance.watchHealth?.((serving) => server.setServing(serving));
    const message: ListeningMessage = {
      type: "listening",
      service: options.name,
      address: server.address,
      pid: process.pid,
      metricsAddress: metrics?.address ?? "",
    };
    process.send?.(message);
    // Started by `loramesh up`: if that parent dies without stopping us, stop too.
    if (process.send) process.once("disconnect", () => process.kill(process.pid, "SIGTERM"));
    logger.info("serving", { address: server.address, metrics: metrics?.address ?? "off" });
  } catch (err) {
    if (isLoraMeshError(err)) logger.error(`${options.name} cannot start: ${err.message}`);
    else logger.error(`${options.name} cannot start`, { error: describeError(err) });
    process.exitCode = 2;
    // Connections opened before the failure must not keep the process alive.
    setTimeout(() => process.exit(2), 100).unref();
  }
}
