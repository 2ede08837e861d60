/** The LoRA server's registration and heartbeats with the provisioner. */
import type { Logger } from "@loramesh/core";
import { ExecutorAgent } from "@loramesh/mesh";
import { ExecutorKind } from "@loramesh/proto";
import type { AdapterPool } from "./adapter-pool";

export interface LoraServerAgentOptions {
  provisionerAddress: string;
  executorId: string;
  address: string;
  hostId: string;
  modelDir: string;
  pool: AdapterPool;
  /** Worker streams open now. */
  openStreams: () => number;
  /** Rows served since start. */
  rowsServed: () => number;
  logger: Logger;
}

export function startLoraServerAgent(options: LoraServerAgentOptions): ExecutorAgent {
  const { pool } = options;
  let lastRows = options.rowsServed();
  let lastTime = Date.now();
  const agent = new ExecutorAgent(
    options.provisionerAddress,
    {
      executorId: options.executorId,
      kind: ExecutorKind.EXECUTOR_KIND_LORA_SERVER,
      address: options.address,
      hostId: options.hostId,
      adapterCapacityBytes: pool.capacityBytes,
      maxRank: 256,
      baseModel: options.modelDir,
      loraMode: 0,
      device: "cpu",
    },
    {
      load: () => {
        const now = Date.now();
        const rows = options.rowsServed();
        const rate = ((rows - lastRows) * 1000) / Math.max(1, now - lastTime);
        lastRows = rows;
        lastTime = now;
        return {
          active: options.openStreams(),
          queued: 0,
          adapterBytesUsed: pool.bytesUsed,
          tokensPerSecond: rate,
          rankWeightedLoad: 0,
        };
      },
      residentAdapterIds: () => pool.stats().residentIds,
      takeAdapterRequests: () => ({}),
    },
    options.logger,
  );
  void agent.start();
  return agent;
}
