/**
 * Cold-start benchmark (not a test): time to first token of the first request to a cold adapter
 * through a real mesh, from a remote source vs from a peer executor, with layer-wise loading off and
 * on, and warm as the reference. The harness (`cold-start-harness.ts`) says how each case is set up
 * and checked.
 *
 *   pnpm bench:cold-start [--json] [--quick] [--trials N] [--layers N] [--hidden N] [--rank N]
 *                         [--source hf|s3] [--source-mib-s N] [--source-latency-ms N] [--max-tokens N]
 *
 * Defaults: a synthetic bf16 llama of 16 layers × 512 (TinyLlama's proportions) and a rank-128 bf16
 * adapter on all 7 projections (35.6 MiB), served by the test hub behind a simulated WAN link of
 * 20 MiB/s with 40 ms per request. `--quick` is a smoke run: 1 trial on a 4 × 256 model.
 */
import { booleanOption, enumOption, intOption, loadConfig } from "@loramesh/core";
import { CASE_NAMES, runColdStart, type ColdStartResult } from "./cold-start-harness";

process.env["LOG_LEVEL"] ??= "error";

const options = {
  json: booleanOption({ flag: "json", default: false, description: "print one JSON object instead of a table" }),
  quick: booleanOption({ flag: "quick", default: false, description: "smoke run: 1 trial, a 4 × 256 model, rank 64" }),
  trials: intOption({ flag: "trials", default: 3, min: 1, description: "cold adapters per case and loading mode" }),
  layers: intOption({ flag: "layers", default: 16, min: 1, description: "layers of the synthetic model" }),
  hidden: intOption({ flag: "hidden", default: 512, min: 128, description: "hidden size (a multiple of 128)" }),
  rank: intOption({ flag: "rank", default: 128, min: 1, description: "LoRA rank of the synthetic adapter" }),
  source: enumOption({
    flag: "source",
    values: ["hf", "s3"] as const,
    default: "hf",
    description: "the remote source: the test hub (HTTP) or the test S3 server",
  }),
  sourceMiBps: intOption({
    flag: "source-mib-s",
    default: 20,
    min: 0,
    description: "the source link's bandwidth in MiB/s (0: loopback, unlimited)",
  }),
  sourceLatencyMs: intOption({
    flag: "source-latency-ms",
    default: 40,
    min: 0,
    description: "the source link's latency per request",
  }),
  maxTokens: intOption({ flag: "max-tokens", default: 4, min: 1, description: "tokens per request" }),
};

function table(r: ColdStartResult): string {
  const rows = [
    `# cold start: TTFT of the first request to a cold adapter (median of ${r.trials}) — ${r.machine.host}, ${r.machine.cores} cores, load ${r.machine.loadavg_1m_at_start}`,
    `# synthetic llama ${r.model.layers} × ${r.model.hidden} bf16; adapter rank ${r.adapter.rank} on 7 projections, ${r.adapter_mib} MiB; source ${r.source.kind} at ${r.source.mib_per_s} MiB/s, ${r.source.latency_ms} ms`,
    "",
    "| case | TTFT ms (median) | samples ms | files from | output matches | differs from base |",
    "|---|---|---|---|---|---|",
  ];
  for (const c of CASE_NAMES)
    rows.push(
      `| ${c} | ${r.ttft_ms[c].toFixed(0)} | ${r.samples_ms[c].map((x) => x.toFixed(0)).join(", ")} | ${[...new Set(r.checks[c].origins)].join(", ")} | ${r.checks[c].tokensMatch} | ${r.checks[c].differsFromBase} |`,
    );
  return rows.join("\n");
}

async function main(): Promise<void> {
  const { config } = loadConfig(options, process.argv.slice(2));
  const explicit = (flag: string): boolean => process.argv.some((a) => a === `--${flag}` || a.startsWith(`--${flag}=`));
  const quick = <T>(flag: string, value: T, small: T): T => (config.quick && !explicit(flag) ? small : value);
  const result = await runColdStart({
    trials: quick("trials", config.trials, 1),
    layers: quick("layers", config.layers, 4),
    hidden: quick("hidden", config.hidden, 256),
    rank: quick("rank", config.rank, 64),
    source: config.source,
    sourceMiBps: config.sourceMiBps,
    sourceLatencyMs: config.sourceLatencyMs,
    maxTokens: config.maxTokens,
    progress: (line) => process.stderr.write(`${line}\n`),
  });
  const failed = CASE_NAMES.filter(
    (c) => !result.checks[c].tokensMatch || !result.checks[c].originsMatch || !result.checks[c].differsFromBase,
  );
  process.stdout.write(config.json ? `${JSON.stringify(result)}\n` : `${table(result)}\n`);
  if (failed.length > 0) {
    process.stderr.write(
      `wrong output, files from the wrong place, or the adapter not applied, in: ${failed.join(", ")}\n`,
    );
    process.exitCode = 1;
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
