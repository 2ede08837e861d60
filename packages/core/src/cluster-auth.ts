/**
 * Mesh membership by a shared cluster token. Internal services (provisioner, base worker, LoRA
 * server) check it on every call with a grpc-js server interceptor, which sees every service on the
 * server (its own, reflection) before any handler runs; only the gRPC health service stays open,
 * because orchestrator probes cannot send metadata and it tells nothing but serving status. Every
 * loramesh client attaches the token with a client interceptor. `loramesh up` generates one token
 * per cluster and hands it to its processes through the environment, never on a command line.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import {
  InterceptingCall,
  ResponderBuilder,
  ServerInterceptingCall,
  ServerListenerBuilder,
  status,
  type Interceptor,
  type Metadata,
  type ServerInterceptor,
} from "@grpc/grpc-js";

/** Environment variable every loramesh process reads the cluster token from. */
export const CLUSTER_TOKEN_ENV = "LORAMESH_CLUSTER_TOKEN";

/** Metadata key the token travels in (lower case, as gRPC metadata keys must be). */
export const CLUSTER_TOKEN_METADATA_KEY = "x-loramesh-cluster-token";

/** Shortest token accepted: 128 bits of hex, so it cannot be guessed. */
export const MIN_CLUSTER_TOKEN_LENGTH = 32;

let configured: string | undefined;

/** Sets this process's token (a service sets it from its flag before it creates any client). */
export function setClusterToken(token: string): void {
  configured = token;
}

/** This process's token: the one set, else `$LORAMESH_CLUSTER_TOKEN`, else "" (none). */
export function clusterToken(): string {
  return configured ?? process.env[CLUSTER_TOKEN_ENV] ?? "";
}

/** A fresh random token (`loramesh up` makes one per cluster). */
export function generateClusterToken(): string {
  return randomBytes(32).toString("hex");
}

/** Client interceptor adding the token to every call's metadata. */
export function clusterTokenInterceptor(token: string): Interceptor {
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set(CLUSTER_TOKEN_METADATA_KEY, token);
        next(metadata, listener);
      },
    });
}

/** Client options attaching `token` (this process's by default); empty when there is none. */
export function clusterClientOptions(token: string = clusterToken()): { interceptors?: Interceptor[] } {
  return token === "" ? {} : { interceptors: [clusterTokenInterceptor(token)] };
}

const digest = (value: string): Buffer => createHash("sha256").update(value).digest();

/** True when the metadata carries exactly `token` (compared in constant time). */
export function hasClusterToken(metadata: Metadata, token: string): boolean {
  const sent = metadata.get(CLUSTER_TOKEN_METADATA_KEY)[0];
  if (typeof sent !== "string" || sent.length > 1024) return false;
  return timingSafeEqual(digest(sent), digest(token));
}

/** Methods open to anyone: the health service only (probes). */
function isOpenMethod(path: string): boolean {
  return path.startsWith("/grpc.health.v1.Health/");
}

/**
 * Server interceptor refusing, with UNAUTHENTICATED and before any handler or message, every call
 * that does not carry `token`. The token never appears in the status message or in logs.
 */
export function clusterTokenServerInterceptor(token: string): ServerInterceptor {
  return (descriptor, call) => {
    if (isOpenMethod(descriptor.path)) return new ServerInterceptingCall(call);
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        if (hasClusterToken(metadata, token)) next(metadata);
        else
          call.sendStatus({
            code: status.UNAUTHENTICATED,
            details: "this is an internal loramesh service: calls need the cluster token",
          });
      })
      .build();
    const responder = new ResponderBuilder().withStart((next) => next(listener)).build();
    return new ServerInterceptingCall(call, responder);
  };
}
