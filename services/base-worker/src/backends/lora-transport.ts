/**
 * Which wire a worker uses toward each LoRA server (`--lora-transport`):
 *   auto  shared-memory ring with a same-host server, UCX with a server on another host when this
 *         worker's native core has UCX (the server may still refuse: then gRPC), else gRPC
 *   shm   the ring with same-host servers, gRPC with the others (the behaviour before UCX)
 *   ucx   UCX with every server, same host included (UCX then picks its shared-memory transports)
 *   grpc  the Execute stream only
 * `--shared-memory=false` takes the ring out of every choice (auto then means UCX or gRPC).
 */
import { FailedPreconditionError } from "@loramesh/errors";
import type { WireTransport } from "@loramesh/lora-wire";

export const LORA_TRANSPORTS = ["auto", "shm", "ucx", "grpc"] as const;
export type LoraTransportChoice = (typeof LORA_TRANSPORTS)[number];

export interface TransportPolicy {
  choice: LoraTransportChoice;
  sharedMemory: boolean;
  ucxAvailable: boolean;
}

/** Checks the choice against this build; a forced UCX without UCX in the native core is refused. */
export function transportPolicy(
  choice: LoraTransportChoice,
  sharedMemory: boolean,
  ucxAvailable: boolean,
): TransportPolicy {
  if (choice === "ucx" && !ucxAvailable)
    throw new FailedPreconditionError(
      "--lora-transport ucx: this native core was built without UCX (install libucx-dev and rebuild)",
    );
  return { choice, sharedMemory, ucxAvailable };
}

/** The transport to try first toward one server (the stream stays the fallback). */
export function transportFor(policy: TransportPolicy, sameHost: boolean): WireTransport {
  const shm = policy.sharedMemory && sameHost && (policy.choice === "auto" || policy.choice === "shm");
  if (shm) return "shm";
  if (policy.choice === "ucx") return "ucx";
  if (policy.choice === "auto" && !sameHost && policy.ucxAvailable) return "ucx";
  return "grpc";
}
