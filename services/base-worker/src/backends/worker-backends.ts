/**
 * The worker's LoRA backends, chosen by mode. They live together here: the local adapters (on the
 * engine's in-process kernels), the remote backend (LoRA servers over `@loramesh/lora-wire`) and
 * the hybrid split. They stay in the worker, not in packages/engine, because the remote one needs
 * the mesh (placement) and the wire, which the engine must not depend on, and hybrid only exists
 * where remote does.
 */
import type { Logger } from "@loramesh/core";
import type { LoraBackend, LoraSiteCall } from "@loramesh/engine";
import type { ModelConfig } from "@loramesh/formats";
import type { PlacementCache } from "@loramesh/mesh";
import { HybridLoraBackend } from "./hybrid-lora-backend";
import { LocalAdapters } from "./local-adapters";
import type { TransportPolicy } from "./lora-transport";
import { RemoteLoraBackend } from "./remote-lora-backend";

export type WorkerMode = "coupled" | "disaggregated" | "hybrid";

export interface WorkerBackendsOptions {
  mode: WorkerMode;
  config: ModelConfig;
  placement: PlacementCache;
  workerId: string;
  hostId: string;
  sharedMemory: boolean;
  /** Which wire to use per LoRA server (`--lora-transport`). */
  transport?: TransportPolicy;
  /** Adapter budget for local adapters (coupled, hybrid). */
  localCapacityBytes: number;
  /** Called when the local resident set changes (the agent heartbeats at once). */
  onLocalChange: () => void;
  /** Local adapters load layer by layer (default on), a site waiting at most `layerWaitMs` for its layer. */
  layerwiseLoading?: boolean;
  layerWaitMs?: number;
  /** LoRA round-trip timeout and failover budget (remote backend). */
  timeoutMs?: number;
  failoverMs?: number;
  /** The remote backend cannot reach a LoRA server (reported to the provisioner). */
  onUnreachable?: (serverId: string, adapterIds: readonly string[]) => void;
  logger: Logger;
}

export interface WorkerBackends {
  /** What the engine calls at every site. */
  backend: LoraBackend;
  local: LocalAdapters | undefined;
  remote: RemoteLoraBackend | undefined;
  /** Which transport a site call used, for spans and the latency histogram. */
  transportOf: (call: LoraSiteCall) => string;
}

export function createWorkerBackends(options: WorkerBackendsOptions): WorkerBackends {
  const { mode } = options;
  const local =
    mode !== "disaggregated"
      ? new LocalAdapters({
          model: options.config,
          capacityBytes: options.localCapacityBytes,
          logger: options.logger,
          onChange: options.onLocalChange,
          ...(options.layerwiseLoading !== undefined ? { layerwise: options.layerwiseLoading } : {}),
          ...(options.layerWaitMs !== undefined ? { layerWaitMs: options.layerWaitMs } : {}),
        })
      : undefined;
  const remote =
    mode !== "coupled"
      ? new RemoteLoraBackend({
          config: options.config,
          placement: options.placement,
          workerId: options.workerId,
          hostId: options.hostId,
          sharedMemory: options.sharedMemory,
          ...(options.transport ? { transport: options.transport } : {}),
          ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
          ...(options.failoverMs !== undefined ? { failoverMs: options.failoverMs } : {}),
          ...(options.onUnreachable ? { onUnreachable: options.onUnreachable } : {}),
          logger: options.logger,
        })
      : undefined;
  const hybrid = local && remote ? new HybridLoraBackend({ local: local.backend, remote }) : undefined;
  const backend: LoraBackend = hybrid ?? remote ?? (local as LocalAdapters).backend;
  const remoteTransport = (): string => {
    const transports = new Set(Object.values(remote?.transports() ?? {}));
    return transports.size === 1 ? ([...transports][0] as string) : transports.size === 0 ? "grpc" : "mixed";
  };
  const transportOf = (call: LoraSiteCall): string => {
    if (!remote) return "local";
    if (!hybrid) return remoteTransport();
    const used = hybrid.halves(call);
    return used.local && used.remote ? "hybrid" : used.local ? "local" : remoteTransport();
  };
  return { backend, local, remote, transportOf };
}
