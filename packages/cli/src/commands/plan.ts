import { readFileSync } from "node:fs";
import { credentials } from "@grpc/grpc-js";
import {
  clusterClientOptions,
  addressOption,
  booleanOption,
  formatOptionsHelp,
  intOption,
  loadConfig,
  numberOption,
  stringOption,
} from "@loramesh/core";
import { InvalidArgumentError } from "@loramesh/errors";
import { unary } from "@loramesh/mesh";
import { ProvisionerServiceClient } from "@loramesh/proto";
import { makeAdapters, planCapacity, type PolicyAdapter } from "@loramesh/policy";
import type { Command } from "../command";
import { costModelFrom, workloadFrom, workloadOptions } from "../workload-options";

const options = {
  ...workloadOptions,
  workload: stringOption({
    flag: "workload",
    default: "",
    description: "JSON file: {adapters: [{id, rank, sizeBytes, share}], requestRate}",
  }),
  provisioner: addressOption({
    flag: "provisioner",
    default: "",
    description: "plan from live statistics: the cluster's provisioner (registered adapters, traffic from heartbeats)",
  }),
  redisUrl: stringOption({
    flag: "redis-url",
    secret: true,
    default: "",
    description: "deprecated: the CLI no longer reads Redis; give --provisioner HOST:PORT instead",
  }),
  coverage: numberOption({
    flag: "coverage",
    default: 0.95,
    min: 0,
    max: 1,
    description: "required probability that a request's adapter is resident on arrival",
  }),
  serverCapacityGib: numberOption({
    flag: "server-capacity-gib",
    default: 8,
    min: 0.001,
    description: "adapter budget of one LoRA server, GiB",
  }),
  maxServers: intOption({ flag: "max-servers", default: 256, min: 1, description: "largest fleet considered" }),
  json: booleanOption({ flag: "json", description: "print one JSON object" }),
};

/** `loramesh plan`: the smallest resident set and LoRA-server count meeting the SLO. */
export const planCommand: Command = {
  name: "plan",
  summary: "recommend LoRA-server capacity for a workload (knapsack over adapter popularity and size)",
  help: () =>
    `Usage: loramesh plan [--provisioner HOST:PORT | --workload FILE | workload flags] [--coverage P] [--server-capacity-gib G] [--json]\n\nOptions:\n${formatOptionsHelp(options)}\n`,
  async run(argv) {
    const { config } = loadConfig(options, argv);
    const cost = costModelFrom(config);
    let adapters: PolicyAdapter[];
    let rate = config.rate;
    if (config.redisUrl !== "" && config.provisioner === "")
      throw new InvalidArgumentError(
        "--redis-url is deprecated: loramesh plan asks the provisioner instead of reading Redis; give --provisioner HOST:PORT",
      );
    if (config.provisioner !== "") {
      adapters = await liveAdapters(config.provisioner);
    } else if (config.workload !== "") {
      let parsed: { adapters?: PolicyAdapter[]; requestRate?: number };
      try {
        parsed = JSON.parse(readFileSync(config.workload, "utf8")) as typeof parsed;
      } catch (err) {
        throw new InvalidArgumentError(`cannot read ${config.workload}: ${(err as Error).message}`);
      }
      if (!Array.isArray(parsed.adapters) || parsed.adapters.length === 0)
        throw new InvalidArgumentError(`${config.workload} has no adapters`);
      adapters = parsed.adapters;
      rate = parsed.requestRate ?? rate;
    } else {
      const spec = workloadFrom(config);
      const list = makeAdapters(spec);
      const total = list.reduce((s, a) => s + a.weight, 0);
      adapters = list.map((a) => ({ id: a.id, rank: a.rank, sizeBytes: a.sizeBytes, share: a.weight / total }));
    }
    const plan = planCapacity(
      {
        adapters,
        serverCapacityBytes: Math.round(config.serverCapacityGib * 1024 ** 3),
        coverage: config.coverage,
        requestRate: rate,
        decodeTokensPerRequest: config.outputTokens,
        tpotMs: config.sloTpotMs,
        maxServers: config.maxServers,
      },
      cost,
    );
    const out = {
      calibration: cost.calibration.machine,
      adapters: adapters.length,
      coverageTarget: config.coverage,
      ...plan,
      residentAdapters: plan.residentAdapters.length,
    };
    if (config.json) process.stdout.write(`${JSON.stringify(out)}\n`);
    else
      process.stdout.write(
        `recommended LoRA servers: ${plan.loraServers} (${plan.reason})\nresident adapters: ${plan.residentAdapters.length} of ${adapters.length}, ${(plan.residentBytes / 1024 ** 3).toFixed(2)} GiB, coverage ${(plan.coverage * 100).toFixed(1)} % (target ${(config.coverage * 100).toFixed(1)} %)\npredicted LoRA time per step: ${(plan.predictedLoraStepUs / 1000).toFixed(2)} ms (TPOT target ${config.sloTpotMs} ms)\ncalibration: ${cost.calibration.machine}\n`,
      );
    return plan.meetsTtft && plan.meetsTpot ? 0 : 1;
  },
};

/**
 * Registered adapters with their share of the requests workers have reported, from the
 * provisioner's GetPlanInput; uniform shares before any traffic.
 */
async function liveAdapters(address: string): Promise<PolicyAdapter[]> {
  const client = new ProvisionerServiceClient(address, credentials.createInsecure(), clusterClientOptions());
  try {
    // unary() calls the method on `client` and rejects with the typed domain error of the status.
    // eslint-disable-next-line @typescript-eslint/unbound-method
    const input = await unary(client.getPlanInput, client, {});
    if (input.adapters.length === 0) throw new InvalidArgumentError(`no adapters are registered with ${address}`);
    const total = input.adapters.reduce((s, a) => s + a.requests, 0);
    return input.adapters.map((a) => ({
      id: a.adapterId,
      rank: a.rank,
      sizeBytes: a.sizeBytes,
      share: total > 0 ? a.requests / total : 1 / input.adapters.length,
    }));
  } finally {
    client.close();
  }
}
