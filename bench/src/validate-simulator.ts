/**
 * Does the simulator predict the real mesh? Calibrates this machine (`loramesh calibrate`), runs a
 * few real-mesh configurations with `loramesh bench load --local` (real processes, Redis, gRPC), and
 * simulates the same workload (same seed, so the same requests) on the same topology. Prints one
 * JSON object with --json: each case's measured and predicted P95 TTFT, mean TPOT and throughput,
 * their errors, `max_error_pct`, and how busy the machine's cores were while the real runs ran.
 *
 *   pnpm bench:validate-simulator [--json] [--calibration FILE] [--duration S]
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import {
  CostModel,
  DEFAULT_CALIBRATION,
  DEFAULT_WORKLOAD,
  policyByName,
  simulate,
  type Calibration,
  type ClusterSpec,
  type ServingMode,
  type WorkloadSpec,
} from "@loramesh/policy";

const args = process.argv.slice(2);
const json = args.includes("--json");
const flag = (name: string): string | undefined => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const REPO_ROOT = join(__dirname, "..", "..");
const CLI = join(REPO_ROOT, "packages", "cli", "dist", "bin.js");
const RESULTS = join(REPO_ROOT, "bench", "results");
mkdirSync(RESULTS, { recursive: true });
const duration = Number(flag("--duration") ?? 12);
const log = (line: string): void => void process.stderr.write(`validate-simulator: ${line}\n`);

interface Case {
  name: string;
  mode: ServingMode;
  policy: string;
  rate: number;
}

// Short runs (≤ ~20 s of traffic each): modes, policies and a low and a high rate.
const CASES: Case[] = [
  { name: "coupled, rank-aware, 4 req/s", mode: "coupled", policy: "rank-aware", rate: 4 },
  { name: "coupled, round-robin, 12 req/s", mode: "coupled", policy: "round-robin", rate: 12 },
  { name: "disaggregated, rank-aware, 4 req/s", mode: "disaggregated", policy: "rank-aware", rate: 4 },
  { name: "hybrid, rank-aware+rebalancing, 8 req/s", mode: "hybrid", policy: "rank-aware+rebalancing", rate: 8 },
];

/** The workload `loramesh bench load` runs with its defaults (same seed: the same requests). */
const workloadAt = (rate: number): WorkloadSpec => ({
  ...DEFAULT_WORKLOAD,
  adapters: 12,
  ranks: [4, 8, 16, 32, 64],
  zipf: 1.2,
  rate,
  duration,
  promptMedian: 24,
  outputMedian: 16,
  lengthSigma: 0.4,
  seed: 1,
});

function cli(argv: string[]): string {
  const r = spawnSync(process.execPath, [CLI, ...argv], {
    cwd: REPO_ROOT,
    encoding: "utf8",
    maxBuffer: 64 << 20,
    stdio: ["ignore", "pipe", "inherit"],
  });
  if (r.status !== 0) throw new Error(`loramesh ${argv.join(" ")} exited with ${r.status}`);
  return r.stdout;
}

/** Busy cores over an interval, from /proc/stat (Linux), or the 1-minute load average. */
function cpuTicks(): { busy: number; total: number } | undefined {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n")[0] as string;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    const total = v.reduce((s, x) => s + x, 0);
    return { busy: total - idle, total };
  } catch {
    return undefined;
  }
}

function calibration(): { calibration: Calibration; file: string } {
  const given = flag("--calibration");
  const file = given ?? join(RESULTS, "validate-calibration.json");
  if (!given) {
    log("calibrating this machine (loramesh calibrate)");
    cli(["calibrate", "--out", file]);
  }
  const parsed = JSON.parse(readFileSync(file, "utf8")) as Partial<Calibration>;
  return { calibration: { ...DEFAULT_CALIBRATION, ...parsed }, file };
}

/**
 * The serving stack's own cost (engine loop, per-token streaming through the router, the LoRA
 * server's round trips under this machine's contention) is not in the kernel calibration: probe
 * the real mesh at 1 request/s, once coupled and once disaggregated, and attribute what the kernel
 * model leaves unexplained to per-step and per-request overheads. The cases then run at other
 * rates, policies and modes.
 */
function probeOverheads(cal: Calibration): { calibration: Calibration; probes: unknown[] } {
  const probeRate = 1;
  // Long enough for a P95 that is not just the run's first request (which also opens connections).
  const probeDuration = Math.max(30, duration);
  const coupled: Case = {
    name: `probe: coupled, ${probeRate} req/s`,
    mode: "coupled",
    policy: "rank-aware",
    rate: probeRate,
  };
  const disaggregated: Case = { ...coupled, name: `probe: disaggregated, ${probeRate} req/s`, mode: "disaggregated" };
  const bare: Calibration = {
    ...cal,
    stepOverheadUs: 0,
    remoteStepOverheadUs: 0,
    requestOverheadUs: 0,
    requestOverheadP95Us: 0,
    remoteRequestOverheadUs: 0,
    remoteRequestOverheadP95Us: 0,
  };
  const simAt = (c: Case, k: Calibration): Measured => predict(c, new CostModel(k), probeDuration);
  const excessUs = (real: number, simulated: number): number => Math.max(0, (real - simulated) * 1000);
  const mc = runReal(coupled, probeDuration);
  const stepOverheadUs = excessUs(mc.tpotMs.mean, simAt(coupled, bare).tpotMs.mean);
  const withStep = { ...bare, stepOverheadUs, remoteStepOverheadUs: stepOverheadUs };
  // At 1 request/s nothing queues: what the model leaves of TTFT is the stack's per-request
  // overhead, at its median and at its P95 (the hops' tail).
  const sc = simAt(coupled, withStep);
  const requestOverheadUs = excessUs(mc.ttftMs.p50, sc.ttftMs.p50);
  const requestOverheadP95Us = Math.max(requestOverheadUs, excessUs(mc.ttftMs.p95, sc.ttftMs.p95));
  const md = runReal(disaggregated, probeDuration);
  const sd = simAt(disaggregated, withStep);
  const remoteStepOverheadUs = stepOverheadUs + excessUs(md.tpotMs.mean, sd.tpotMs.mean);
  const sdr = simAt(disaggregated, { ...withStep, remoteStepOverheadUs });
  const remoteRequestOverheadUs = excessUs(md.ttftMs.p50, sdr.ttftMs.p50);
  const remoteRequestOverheadP95Us = Math.max(remoteRequestOverheadUs, excessUs(md.ttftMs.p95, sdr.ttftMs.p95));
  const calibrated: Calibration = {
    ...withStep,
    remoteStepOverheadUs,
    requestOverheadUs,
    requestOverheadP95Us,
    remoteRequestOverheadUs,
    remoteRequestOverheadP95Us,
  };
  const file = join(RESULTS, "validate-calibration-mesh.json");
  writeFileSync(file, `${JSON.stringify(calibrated, null, 2)}\n`);
  const ms = (us: number): string => (us / 1000).toFixed(2);
  log(
    `probe: step overhead ${ms(stepOverheadUs)} ms (${ms(remoteStepOverheadUs)} ms with LoRA-server round trips), token stream ${ms(cal.tokenStreamUs ?? 0)} ms per sequence, request overhead median / P95 ${ms(requestOverheadUs)} / ${ms(requestOverheadP95Us)} ms (disaggregated ${ms(remoteRequestOverheadUs)} / ${ms(remoteRequestOverheadP95Us)} ms) → ${file}`,
  );
  return {
    calibration: calibrated,
    probes: [
      { case: coupled.name, measured: mc },
      { case: disaggregated.name, measured: md },
    ],
  };
}

interface Measured {
  ttftMs: { p50: number; p95: number };
  tpotMs: { mean: number };
  throughputTokensPerSecond: number;
  errors: number;
  completed: number;
}

function runReal(c: Case, seconds = duration): Measured & { busyCores: number | null } {
  log(`real mesh: ${c.name}, ${seconds} s`);
  const before = cpuTicks();
  const out = cli([
    "bench",
    "load",
    "--local",
    "--mode",
    c.mode,
    "--workers",
    "1",
    "--lora-servers",
    "1",
    "--placement-policy",
    c.policy,
    "--rate",
    String(c.rate),
    "--duration",
    String(seconds),
    "--json",
  ]);
  const after = cpuTicks();
  const busyCores =
    before && after ? ((after.busy - before.busy) / Math.max(1, after.total - before.total)) * cpus().length : null;
  return { ...(JSON.parse(out) as Measured), busyCores };
}

function predict(c: Case, cost: CostModel, seconds = duration): Measured {
  // One worker and one LoRA server, as `bench load --local --workers 1 --lora-servers 1` starts;
  // the engine's own limits (64 sequences, 512 tokens a step); every adapter fits in memory.
  const cluster: ClusterSpec = {
    executors: 1,
    capacityBytes: 8 * 1024 ** 3,
    maxBatch: 64,
    maxBatchTokens: 512,
    mode: c.mode,
    loraServers: 1,
    kernel: "true",
    rankAwareRouting: c.policy.startsWith("rank-aware"),
    replaceEvery: 0,
  };
  const r = simulate({ ...workloadAt(c.rate), duration: seconds }, cluster, policyByName(c.policy), cost, {
    ttftMs: 1e9,
    tpotMs: 1e9,
  });
  return { ...r, errors: 0 };
}

const errorPct = (predicted: number, measured: number): number =>
  measured === 0 ? (predicted === 0 ? 0 : 100) : (100 * Math.abs(predicted - measured)) / measured;

const load = { start: loadavg()[0] as number };
const kernels = calibration();
const file = kernels.file;
const { calibration: cal, probes } = probeOverheads(kernels.calibration);
const cost = new CostModel(cal);
const cases = CASES.map((c) => {
  const measured = runReal(c);
  const predicted = predict(c, cost);
  const error = {
    ttftP95: errorPct(predicted.ttftMs.p95, measured.ttftMs.p95),
    tpotMean: errorPct(predicted.tpotMs.mean, measured.tpotMs.mean),
    throughput: errorPct(predicted.throughputTokensPerSecond, measured.throughputTokensPerSecond),
  };
  return {
    case: c.name,
    mode: c.mode,
    policy: c.policy,
    rate: c.rate,
    durationS: duration,
    measured: {
      ttftP95Ms: measured.ttftMs.p95,
      tpotMeanMs: measured.tpotMs.mean,
      throughputTokensPerSecond: measured.throughputTokensPerSecond,
      completed: measured.completed,
      errors: measured.errors,
    },
    predicted: {
      ttftP95Ms: predicted.ttftMs.p95,
      tpotMeanMs: predicted.tpotMs.mean,
      throughputTokensPerSecond: predicted.throughputTokensPerSecond,
      completed: predicted.completed,
    },
    errorPct: error,
    busyCoresDuringRun: measured.busyCores,
  };
});
const maxError = Math.max(...cases.flatMap((c) => Object.values(c.errorPct)));
const report = {
  machine: { cores: cpus().length, loadAverage1m: { start: load.start, end: loadavg()[0] } },
  calibration: {
    file,
    machine: cal.machine,
    measuredAt: cal.measuredAt,
    overheadsFromProbes: {
      stepOverheadUs: cal.stepOverheadUs,
      remoteStepOverheadUs: cal.remoteStepOverheadUs,
      requestOverheadUs: cal.requestOverheadUs,
      requestOverheadP95Us: cal.requestOverheadP95Us,
      remoteRequestOverheadUs: cal.remoteRequestOverheadUs,
      remoteRequestOverheadP95Us: cal.remoteRequestOverheadP95Us,
      tokenStreamUs: cal.tokenStreamUs,
    },
  },
  probes,
  cases,
  max_error_pct: maxError,
  target_pct: 20,
};
if (json) process.stdout.write(`${JSON.stringify(report)}\n`);
else {
  const f = (v: number, d = 1): string => v.toFixed(d);
  process.stdout.write(
    [
      `calibration: ${cal.machine} (${file}); ${cpus().length} cores, load average ${f(load.start, 2)} → ${f(report.machine.loadAverage1m.end ?? 0, 2)}`,
      "| case | busy cores | TTFT P95 measured / predicted (ms) | mean TPOT measured / predicted (ms) | throughput measured / predicted (tok/s) | max error |",
      "|---|---|---|---|---|---|",
      ...cases.map(
        (c) =>
          `| ${c.case} | ${c.busyCoresDuringRun === null ? "?" : f(c.busyCoresDuringRun, 2)} | ${f(c.measured.ttftP95Ms)} / ${f(c.predicted.ttftP95Ms)} | ${f(c.measured.tpotMeanMs, 2)} / ${f(c.predicted.tpotMeanMs, 2)} | ${f(c.measured.throughputTokensPerSecond)} / ${f(c.predicted.throughputTokensPerSecond)} | ${f(Math.max(...Object.values(c.errorPct)))} % |`,
      ),
      `max_error_pct ${f(maxError)} (target ≤ 20)`,
      "",
    ].join("\n"),
  );
}
