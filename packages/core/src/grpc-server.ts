/**
 * A grpc-js server as every loramesh process runs it: its own services, the standard health
 * service and server reflection (fed from the buf-built descriptor set), raised message limits for
 * tensor traffic, and a graceful stop.
 */
import { readFileSync } from "node:fs";
import { Server, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { loadFileDescriptorSetFromBuffer, type PackageDefinition } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { DESCRIPTOR_SET_PATH } from "@loramesh/proto";
import { HealthImplementation, type ServingStatusMap } from "grpc-health-check";
import { UnavailableError } from "@loramesh/errors";
import { clusterTokenServerInterceptor } from "./cluster-auth";
import type { Logger } from "./logging";
import { tolerantDefinition } from "./undecodable-request";

/** Activation tensors travel in one message each; 64 MiB leaves room above the 16 MiB chunk size. */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** The name the health service uses for the whole server. */
export const HEALTH_SERVICE = "grpc.health.v1.Health";

/** gRPC channel options shared by loramesh servers and clients. */
export const GRPC_CHANNEL_OPTIONS = {
  "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
  "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000,
  // A peer restarted at the same address is reached within a second, not after grpc-js's
  // default reconnect backoff (up to two minutes).
  "grpc.initial_reconnect_backoff_ms": 200,
  "grpc.max_reconnect_backoff_ms": 1_000,
} as const;

export interface ServiceRegistration {
  /** Fully qualified name, e.g. `loramesh.v1.InferenceService`. */
  name: string;
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
}

export interface StartGrpcServerOptions {
  /** `host:port` to listen on; port 0 picks a free port. */
  address: string;
  services: readonly ServiceRegistration[];
  logger: Logger;
  /** Server credentials; plaintext when absent. */
  credentials?: ServerCredentials;
  /** When set, every call but health must carry this cluster token (internal services). */
  clusterToken?: string;
}

export interface RunningGrpcServer {
  readonly server: Server;
  /** The bound address with the real port. */
  readonly address: string;
  readonly port: number;
  /** Marks every service (and the server as a whole) SERVING or NOT_SERVING. */
  setServing(serving: boolean): void;
  /** Stops accepting calls, lets running calls finish for up to `graceMs`, then cancels the rest. */
  stop(graceMs?: number): Promise<void>;
}

let reflectionPackage: PackageDefinition | undefined;

/** The protocol's descriptors as proto-loader reads them (loaded once per process). */
export function loadReflectionPackage(): PackageDefinition {
  reflectionPackage ??= loadFileDescriptorSetFromBuffer(readFileSync(DESCRIPTOR_SET_PATH), {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return reflectionPackage;
}

/** Starts a server with health and reflection; all services start NOT_SERVING until `setServing(true)`. */
export async function startGrpcServer(options: StartGrpcServerOptions): Promise<RunningGrpcServer> {
  const { logger } = options;
  const token = options.clusterToken ?? "";
  const server = new Server({
    ...GRPC_CHANNEL_OPTIONS,
    ...(token !== "" ? { interceptors: [clusterTokenServerInterceptor(token)] } : {}),
  });
  const names = options.services.map((s) => s.name);
  for (const service of options.services)
    server.addService(tolerantDefinition(service.definition), service.implementation);

  const initial: ServingStatusMap = { "": "NOT_SERVING" };
  for (const name of names) initial[name] = "NOT_SERVING";
  const health = new HealthImplementation(initial);
  health.addToServer(server);

  new ReflectionService(loadReflectionPackage(), { services: [...names, HEALTH_SERVICE] }).addToServer(server);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(options.address, options.credentials ?? ServerCredentials.createInsecure(), (err, bound) => {
      if (err) reject(new UnavailableError(`cannot listen on ${options.address}: ${err.message}`, { cause: err }));
      else resolve(bound);
    });
  });
  const host = options.address.slice(0, options.address.lastIndexOf(":"));
  const address = `${host}:${port}`;
  logger.info("grpc server listening", { address, services: names });

  const setServing = (serving: boolean): void => {
    const status = serving ? "SERVING" : "NOT_SERVING";
    health.setStatus("", status);
    for (const name of names) health.setStatus(name, status);
  };

  const stop = async (graceMs = 5_000): Promise<void> => {
    setServing(false);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        logger.warn("grace period over, cancelling remaining calls", { graceMs });
        server.forceShutdown();
        resolve();
      }, graceMs);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  };

  return { server, address, port, setServing, stop };
}
