/** The worker's registration and heartbeats with the provisioner. */
import type { Logger } from "@loramesh/core";
import { ExecutorAgent } from "@loramesh/mesh";
import { ExecutorKind, LoraMode } from "@loramesh/proto";
import type { LocalAdapters } from "./backends/local-adapters";
import type { WorkerMode } from "./backends/worker-backends";
import type { WorkerSequences } from "./worker-sequences";

const MODE: Record<WorkerMode, LoraMode> = {
  coupled: LoraMode.LORA_MODE_COUPLED,
  disaggregated: LoraMode.LORA_MODE_DISAGGREGATED,
  hybrid: LoraMode.LORA_MODE_HYBRID,
};

export interface WorkerAgentOptions {
  provisionerAddress: string;
  executorId: string;
  /** Where routers reach this worker. */
  address: string;
  hostId: string;
  modelDir: string;
  mode: WorkerMode;
  localCapacityBytes: number;
  local: LocalAdapters | undefined;
  sequences: WorkerSequences;
  logger: Logger;
}

export function startWorkerAgent(options: WorkerAgentOptions): ExecutorAgent {
  const { local, sequences } = options;
  const agent = new ExecutorAgent(
    options.provisionerAddress,
    {
      executorId: options.executorId,
      kind: ExecutorKind.EXECUTOR_KIND_BASE_WORKER,
      address: options.address,
      hostId: options.hostId,
      adapterCapacityBytes: local ? options.localCapacityBytes : 0,
      maxRank: 256,
      baseModel: options.modelDir,
      loraMode: MODE[options.mode],
      device: "cpu",
    },
    {
      load: () => {
        const st = sequences.stats();
        return {
          active: st.running,
          queued: st.waiting,
          adapterBytesUsed: local?.bytesUsed ?? 0,
          tokensPerSecond: 0,
          rankWeightedLoad: 0,
        };
      },
      residentAdapterIds: () => local?.ids() ?? [],
      takeAdapterRequests: () => sequences.takeRequestCounts(),
    },
    options.logger,
  );
  void agent.start();
  return agent;
}
