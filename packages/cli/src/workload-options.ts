import { existsSync, readFileSync } from "node:fs";
import { enumOption, intOption, numberOption, stringOption, type ConfigOf } from "@loramesh/core";
import { InvalidArgumentError } from "@loramesh/errors";
import {
  CostModel,
  DEFAULT_CALIBRATION,
  DEFAULT_WORKLOAD,
  type Calibration,
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
