import { booleanOption, enumOption, formatOptionsHelp, intOption, loadConfig, numberOption } from "@loramesh/core";
import {
  POLICY_NAMES,
  policyByName,
  serviceableRate,
  simulate,
  type ClusterSpec,
  type CostModel,
  type GpuCostModel,
  type WorkloadSpec,
} from "@loramesh/policy";
import type { Command } from "../command";
import { costModelFrom, gpuOptions, gpuSetupFrom, workloadFrom, workloadOptions } from "../workload-options";

const options = {
  ...workloadOptions,
  ...gpuOptions,
  policy: enumOption({
    flag: "policy",
    default: "rank-aware+rebalancing",
    values: POLICY_NAMES,
    description: "placement policy",
  }),
  gpus: intOption({ flag: "gpus", default: 128, min: 1, description: "executors (GPUs running the base model)" }),
  mode: enumOption({
    flag: "mode",
    default: "coupled",
    values: ["coupled", "disaggregated", "hybrid"] as const,
    description: "LoRA on the GPUs, on LoRA servers, or hot adapters on the GPUs and the rest on servers",
  }),
  loraServers: intOption({
    flag: "lora-servers",
    default: 8,
    min: 1,
    description: "LoRA servers (disaggregated mode)",
  }),
  capacityGib: numberOption({
    flag: "capacity-gib",
    default: 8,
    min: 0.001,
    description: "adapter budget per executor or LoRA server, GiB",
  }),
  maxBatch: intOption({ flag: "max-batch", default: 64, min: 1, description: "sequences per batch" }),
  rebalanceEvery: numberOption({
    flag: "rebalance-every",
    default: 10,
    min: 0,
    description: "seconds between re-placements (rebalancing policies)",
  }),
  serviceable: booleanOption({ flag: "serviceable", description: "also search the highest rate that meets the SLO" }),
  searchMax: numberOption({
    flag: "search-max",
    default: 0,
    min: 0,
    description: "upper bound (req/s) of the --serviceable search (0: 200, or 2000 with --model-profile)",
  }),
  json: booleanOption({ flag: "json", description: "print one JSON object" }),
};

/** `loramesh simulate`: the trace-driven cluster simulator. */
export const simulateCommand: Command = {
  name: "simulate",
  summary: "simulate a cluster (100+ GPUs) under a synthetic workload and placement policy",
  help: () =>
    `Usage: loramesh simulate [options] [--json]\n\nDeterministic for a seed. The result says which calibration it used.\n\nOptions:\n${formatOptionsHelp(options)}\n`,
  async run(argv) {
    const { config } = loadConfig(options, argv);
    let workload: WorkloadSpec = workloadFrom(config);
    let cost: CostModel | GpuCostModel;
    let cluster: ClusterSpec;
    const gpu = gpuSetupFrom(config);
    if (gpu) {
      // A model profile: the derived GPU cost model, real shapes, HBM pools, LoRA-server queues.
      ({ cost, cluster } = gpu.setup);
      workload = { ...workload, bytesPerRank: gpu.setup.bytesPerRank };
    } else {
      cost = costModelFrom(config);
      cluster = {
        executors: config.gpus,
        capacityBytes: Math.round(config.capacityGib * 1024 ** 3),
        maxBatch: config.maxBatch,
        mode: config.mode,
        loraServers: config.loraServers,
        kernel: config.kernel,
        rankAwareRouting: config.policy.startsWith("rank-aware"),
        replaceEvery: config.policy === "rank-aware+rebalancing" ? config.rebalanceEvery : 0,
      };
    }
    const searchMax = config.searchMax > 0 ? config.searchMax : gpu ? 2000 : 200;
    const slo = { ttftMs: config.sloTtftMs, tpotMs: config.sloTpotMs };
    const result = simulate(workload, cluster, policyByName(config.policy, config.seed), cost, slo);
    const serviceable = config.serviceable
      ? serviceableRate(
          workload,
          cluster,
          () => policyByName(config.policy, config.seed),
          cost,
          slo,
          Math.min(0.5, searchMax),
          searchMax,
        )
      : undefined;
    const out = {
      calibration: gpu
        ? { machine: cost.calibration.machine, derived: true, file: gpu.file, modelProfile: config.modelProfile }
        : {
            machine: cost.calibration.machine,
            measuredAt: (cost as CostModel).calibration.measuredAt,
            file: config.calibration || "built-in",
          },
      workload: {
        adapters: workload.adapters,
        ranks: workload.ranks,
        zipf: workload.zipf,
        rate: workload.rate,
        duration: workload.duration,
        drift: workload.driftAt ?? null,
        seed: workload.seed,
      },
      cluster,
      slo,
      ...result,
      ...(serviceable !== undefined
        ? { serviceableRate: serviceable, searchMax, saturated: serviceable < searchMax }
        : {}),
    };
    if (config.json) {
      process.stdout.write(`${JSON.stringify(out)}\n`);
      return 0;
    }
    process.stdout.write(
      [
        `policy ${result.policy}, ${config.gpus} GPUs (${config.mode}), ${workload.adapters} adapters, ${workload.rate} req/s for ${workload.duration} s, seed ${workload.seed}`,
        gpu
          ? `calibration: ${cost.calibration.machine} (${gpu.file}; derived), model ${config.modelProfile}, ${cluster.executors} serving instances`
          : `calibration: ${cost.calibration.machine} (${config.calibration || "built-in"})`,
        ...(result.loraServerUtilization !== undefined
          ? [`LoRA servers busy ${(result.loraServerUtilization * 100).toFixed(1)} % of the run`]
          : []),
        `completed ${result.completed} requests, ${result.throughputTokensPerSecond.toFixed(0)} tokens/s, ${result.coldLoads} cold loads`,
        `TTFT ms p50/p95/p99 ${result.ttftMs.p50.toFixed(1)} / ${result.ttftMs.p95.toFixed(1)} / ${result.ttftMs.p99.toFixed(1)}`,
        `TPOT ms p50/p95/p99 ${result.tpotMs.p50.toFixed(2)} / ${result.tpotMs.p95.toFixed(2)} / ${result.tpotMs.p99.toFixed(2)} (mean ${result.tpotMs.mean.toFixed(2)})`,
        `SLO attainment ${(result.sloAttainment * 100).toFixed(1)} %, adapters meeting it ${(result.adaptersMeetingSlo * 100).toFixed(1)} %`,
        ...(serviceable !== undefined
          ? [
              `serviceable rate ${serviceable >= searchMax ? "≥ " : ""}${serviceable.toFixed(1)} req/s (search bound ${searchMax})`,
            ]
          : []),
        "",
      ].join("\n"),
    );
    return 0;
  },
};
