import { existsSync, readFileSync } from "node:fs";
import { booleanOption, enumOption, intOption, numberOption, stringOption, type ConfigOf } from "@loramesh/core";
import { InvalidArgumentError } from "@loramesh/errors";
import {
  CostModel,
  DEFAULT_CALIBRATION,
  DEFAULT_WORKLOAD,
  GPU_CLUSTER_DEFAULTS,
  gpuCluster,
  H100_DERIVED,
  MODEL_PROFILE_NAMES,
  MODEL_PROFILES,
  type Calibration,
  type GpuCalibration,
  type GpuClusterSetup,
  type ServingMode,
  type WorkloadSpec,
} from "@loramesh/policy";

/** Flags describing a synthetic workload and the calibration, shared by simulate and plan. */
export const workloadOptions = {
  adapters: intOption({
    flag: "adapters",
    default: DEFAULT_WORKLOAD.adapters,
    min: 1,
    description: "number of adapters",
  }),
  ranks: stringOption({
    flag: "ranks",
    default: DEFAULT_WORKLOAD.ranks.join(","),
    description: "ranks drawn uniformly, comma-separated",
  }),
  zipf: numberOption({
    flag: "zipf",
    default: DEFAULT_WORKLOAD.zipf,
    min: 0,
    description: "Zipf exponent of adapter popularity",
  }),
  rate: numberOption({
    flag: "rate",
    default: DEFAULT_WORKLOAD.rate,
    min: 0.01,
    description: "requests per second (Poisson)",
  }),
  duration: numberOption({
    flag: "duration",
    default: DEFAULT_WORKLOAD.duration,
    min: 1,
    description: "seconds of traffic",
  }),
  promptTokens: intOption({
    flag: "prompt-tokens",
    default: DEFAULT_WORKLOAD.promptMedian,
    min: 1,
    description: "median prompt length (log-normal)",
  }),
  outputTokens: intOption({
    flag: "output-tokens",
    default: DEFAULT_WORKLOAD.outputMedian,
    min: 1,
    description: "median output length (log-normal)",
  }),
  adapterMibPerRank: numberOption({
    flag: "adapter-mib-per-rank",
    default: 1,
    min: 0.001,
    description: "adapter size in MiB per unit of rank (true-rank storage)",
  }),
  drift: numberOption({
    flag: "drift",
    default: 0,
    min: 0,
    max: 1,
    description: "fraction of the run after which the popular set changes (0: none)",
  }),
  seed: intOption({ flag: "seed", default: 1, min: 0, description: "random seed (runs are deterministic for a seed)" }),
  calibration: stringOption({
    flag: "calibration",
    default: "",
    description: "calibration file from `loramesh calibrate` (default: the built-in one)",
  }),
  sloTtftMs: intOption({ flag: "slo-ttft-ms", default: 1000, min: 1, description: "P95 time-to-first-token target" }),
  sloTpotMs: intOption({ flag: "slo-tpot-ms", default: 100, min: 1, description: "mean time-per-output-token target" }),
  kernel: enumOption({
    flag: "kernel",
    default: "true",
    values: ["true", "padded"] as const,
    description: "LoRA cost at true rank (loramesh) or padded to the batch maximum",
  }),
};

export type WorkloadConfig = ConfigOf<typeof workloadOptions>;

/** The `--ranks` list: comma-separated positive integers. */
export function parseRanks(text: string): number[] {
  const ranks = text.split(",").map((r) => Number(r.trim()));
  if (ranks.some((r) => !Number.isInteger(r) || r < 1))
    throw new InvalidArgumentError(`--ranks must be positive integers, got ${text}`);
  return ranks;
}

export function workloadFrom(config: WorkloadConfig): WorkloadSpec {
  const ranks = parseRanks(config.ranks);
  return {
    ...DEFAULT_WORKLOAD,
    adapters: config.adapters,
    ranks,
    zipf: config.zipf,
    rate: config.rate,
    duration: config.duration,
    promptMedian: config.promptTokens,
    outputMedian: config.outputTokens,
    bytesPerRank: Math.round(config.adapterMibPerRank * 1024 * 1024),
    ...(config.drift > 0 ? { driftAt: config.drift } : {}),
    seed: config.seed,
  };
}

export function costModelFrom(config: WorkloadConfig): CostModel {
  if (config.calibration === "") return new CostModel(DEFAULT_CALIBRATION);
  if (!existsSync(config.calibration))
    throw new InvalidArgumentError(`calibration file ${config.calibration} does not exist; run loramesh calibrate`);
  try {
    return new CostModel({
      ...DEFAULT_CALIBRATION,
      ...(JSON.parse(readFileSync(config.calibration, "utf8")) as Partial<Calibration>),
    });
  } catch (err) {
    throw new InvalidArgumentError(`cannot read ${config.calibration}: ${(err as Error).message}`);
  }
}

/** Flags of the GPU simulator: a model profile switches `simulate` to the derived GPU cost model. */
export const gpuOptions = {
  modelProfile: stringOption({
    flag: "model-profile",
    default: "",
    description: `simulate GPUs serving this model (${MODEL_PROFILE_NAMES.join(", ")}); default: the CPU calibration`,
  }),
  gpuCalibration: stringOption({
    flag: "gpu-calibration",
    default: "",
    description: "GPU cost-model file (default: built-in, = bench/calibrations/h100-derived.json)",
  }),
  loraServerGpus: intOption({
    flag: "lora-server-gpus",
    default: GPU_CLUSTER_DEFAULTS.loraServerGpus,
    min: 1,
    description: "GPUs of the LoRA servers, out of --gpus (model profile; disaggregated, hybrid)",
  }),
  ep: intOption({
    flag: "ep",
    default: GPU_CLUSTER_DEFAULTS.ep,
    min: 1,
    description: "expert-parallel GPUs per LoRA-server lane",
  }),
  pp: intOption({
    flag: "pp",
    default: GPU_CLUSTER_DEFAULTS.pp,
    min: 1,
    description: "pipeline lanes per LoRA server",
  }),
  link: enumOption({
    flag: "link",
    default: GPU_CLUSTER_DEFAULTS.link,
    values: ["nvlink", "infiniband", "pcie"] as const,
    description: "link between serving instances and LoRA servers",
  }),
  loraMemory: enumOption({
    flag: "lora-memory",
    default: "unified",
    values: ["unified", "split"] as const,
    description: "adapters and KV in one pool (S-LoRA) or a fixed split (--lora-memory-share)",
  }),
  loraMemoryShare: numberOption({
    flag: "lora-memory-share",
    default: 0.4,
    min: 0,
    max: 1,
    description: "adapter share of an instance's pool with --lora-memory split",
  }),
  scheduler: enumOption({
    flag: "scheduler",
    default: "fcfs",
    values: ["fcfs", "sjf"] as const,
    description: "queue order at an instance",
  }),
  maxBatchTokens: intOption({
    flag: "max-batch-tokens",
    default: GPU_CLUSTER_DEFAULTS.maxBatchTokens,
    min: 1,
    description: "tokens per step (prefill is chunked; model profile)",
  }),
  noOverlap: booleanOption({
    flag: "no-overlap",
    description: "the remote LoRA call does not overlap the base matmul",
  }),
  pull: booleanOption({ flag: "pull", description: "LoRA servers pull activations instead of being pushed them" }),
  noLayerwise: booleanOption({ flag: "no-layerwise", description: "a request waits for its whole adapter to load" }),
};

export type GpuConfig = ConfigOf<typeof gpuOptions>;

function gpuCalibrationFrom(file: string): GpuCalibration {
  if (file === "") return H100_DERIVED;
  if (!existsSync(file)) throw new InvalidArgumentError(`GPU calibration file ${file} does not exist`);
  try {
    return { ...H100_DERIVED, ...(JSON.parse(readFileSync(file, "utf8")) as Partial<GpuCalibration>), kind: "gpu" };
  } catch (err) {
    throw new InvalidArgumentError(`cannot read ${file}: ${(err as Error).message}`);
  }
}

/** The GPU cluster for `--model-profile`, or undefined without one. */
export function gpuSetupFrom(
  config: WorkloadConfig &
    GpuConfig & { gpus: number; mode: ServingMode; policy: string; maxBatch: number; rebalanceEvery: number },
): { setup: GpuClusterSetup; file: string } | undefined {
  if (config.modelProfile === "") return undefined;
  const profile = MODEL_PROFILES[config.modelProfile];
  if (!profile)
    throw new InvalidArgumentError(
      `--model-profile ${JSON.stringify(config.modelProfile)} is unknown; use ${MODEL_PROFILE_NAMES.join(", ")}`,
    );
  try {
    const setup = gpuCluster({
      ...GPU_CLUSTER_DEFAULTS,
      profile,
      calibration: gpuCalibrationFrom(config.gpuCalibration),
      gpus: config.gpus,
      mode: config.mode,
      loraServerGpus: config.loraServerGpus,
      ep: config.ep,
      pp: config.pp,
      link: config.link,
      adapterShare: config.loraMemory === "unified" ? "unified" : config.loraMemoryShare,
      kernel: config.kernel,
      maxBatch: config.maxBatch,
      maxBatchTokens: config.maxBatchTokens,
      rankAwareRouting: config.policy.startsWith("rank-aware"),
      replaceEvery: config.policy === "rank-aware+rebalancing" ? config.rebalanceEvery : 0,
      overlap: !config.noOverlap,
      push: !config.pull,
      layerwiseLoading: !config.noLayerwise,
      scheduler: config.scheduler,
    });
    return { setup, file: config.gpuCalibration || "built-in (bench/calibrations/h100-derived.json)" };
  } catch (err) {
    if (err instanceof RangeError) throw new InvalidArgumentError(err.message);
    throw err;
  }
}
