/**
 * A GPU cluster for the simulator from a model profile and the GPU calibration: how many serving
 * instances the GPUs make, the KV/adapter pool each has after the bf16 weights, and the LoRA
 * servers (expert-parallel × pipeline-parallel groups of GPUs that hold only adapters).
 */
import type { RankMode } from "./cost-model";
import { GpuCostModel, type GpuCalibration, type Link } from "./gpu-cost-model";
import { adapterBytes, kvBytesPerToken, weightBytes, type LoraTargets, type ModelProfile } from "./model-profiles";
import type { ClusterSpec, ServingMode } from "./simulator";

export interface GpuClusterOptions {
  profile: ModelProfile;
  calibration: GpuCalibration;
  /** All GPUs, LoRA-server GPUs included. */
  gpus: number;
  mode: ServingMode;
  /** GPUs given to LoRA servers (disaggregated, hybrid), in servers of ep × pp GPUs. */
  loraServerGpus: number;
  ep: number;
  pp: number;
  link: Link;
  /** Adapter share of each instance's pool, or one unified pool (S-LoRA). */
  adapterShare: number | "unified";
  kernel: RankMode;
  maxBatch: number;
  maxBatchTokens: number;
  rankAwareRouting: boolean;
  replaceEvery: number;
  overlap: boolean;
  push: boolean;
  layerwiseLoading: boolean;
  scheduler: "fcfs" | "sjf";
  targets?: LoraTargets;
}

export interface GpuClusterSetup {
  cluster: ClusterSpec;
  cost: GpuCostModel;
  /** Adapter bytes per unit of rank (the workload's `bytesPerRank`). */
  bytesPerRank: number;
  poolBytesPerInstance: number;
}

/** Usable bytes of one GPU for KV and adapters once activations are set aside. */
function usableBytes(c: GpuCalibration): number {
  return c.hbmBytes * c.memoryUtilization - c.activationReserveBytes;
}

export function gpuCluster(o: GpuClusterOptions): GpuClusterSetup {
  const m = o.profile;
  const serverGpus = o.mode === "coupled" ? 0 : o.loraServerGpus;
  const perServer = o.ep * o.pp;
  const loraServers = Math.floor(serverGpus / perServer);
  if (o.mode !== "coupled" && loraServers < 1)
    throw new RangeError(`${o.mode} needs at least ep × pp = ${perServer} LoRA-server GPUs, got ${serverGpus}`);
  const executors = Math.floor((o.gpus - loraServers * perServer) / m.gpusPerInstance);
  if (executors < 1)
    throw new RangeError(`${o.gpus} GPUs leave no serving instance of ${m.gpusPerInstance} GPUs for ${m.name}`);
  const pool = m.gpusPerInstance * usableBytes(o.calibration) - weightBytes(m);
  if (pool <= 0) throw new RangeError(`${m.name} does not fit on ${m.gpusPerInstance} GPUs`);
  const share = o.adapterShare === "unified" ? 1 : o.adapterShare;
  const cluster: ClusterSpec = {
    executors,
    capacityBytes: Math.floor(share * pool),
    maxBatch: o.maxBatch,
    mode: o.mode,
    loraServers: Math.max(1, loraServers),
    kernel: o.kernel,
    rankAwareRouting: o.rankAwareRouting,
    replaceEvery: o.replaceEvery,
    maxBatchTokens: o.maxBatchTokens,
    memory: { poolBytes: pool, kvBytesPerToken: kvBytesPerToken(m), adapterShare: o.adapterShare },
    loraServer: { capacityBytes: perServer * usableBytes(o.calibration), ep: o.ep, pp: o.pp, link: o.link },
    overlap: o.overlap,
    push: o.push,
    layerwiseLoading: o.layerwiseLoading,
    scheduler: o.scheduler,
  };
  return {
    cluster,
    cost: new GpuCostModel(o.calibration, m, o.targets),
    bytesPerRank: adapterBytes(m, 1, o.targets),
    poolBytesPerInstance: pool,
  };
}

/** The defaults: the papers' setup (InfiniLoRA's LoRA server: 8 GPUs, EP4 × PP2, InfiniBand). */
export const GPU_CLUSTER_DEFAULTS: Omit<GpuClusterOptions, "profile" | "calibration" | "gpus" | "mode"> = {
  loraServerGpus: 8,
  ep: 4,
  pp: 2,
  link: "infiniband",
  adapterShare: "unified",
  kernel: "true",
  maxBatch: 256,
  maxBatchTokens: 8192,
  rankAwareRouting: true,
  replaceEvery: 0,
  overlap: true,
  push: true,
  layerwiseLoading: true,
  scheduler: "fcfs",
};
