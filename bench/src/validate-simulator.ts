/**
 * Does the simulator predict the real mesh? Calibrates this machine (`loramesh calibrate`), runs a
 * few real-mesh configurations with `loramesh bench load --local` (real processes, Redis, gRPC), and
 * simulates the same workload (same seed, so the same requests) on the same topology. Prints one
 * JSON object with --json: each case's measured and predicted P95 TTFT, mean TPOT and throughput,
 * their errors, `max_error_pct`, and how busy the machine's cores were while the real runs ran.
 *
 *   pnpm bench:validate-simulator [--json] [--quick] [--calibration FILE] [--duration S] [--rounds N]
 *
 * A warm-up pass (one 8-s run of each mode) comes first and is discarded. Every probe and case then runs
 * `--rounds` times (default 3), the rounds one after another, each round alternating probes and
 * cases; a case's measured TTFT P95 and mean TPOT are taken over the requests of all its rounds
 * pooled (`bench load --per-request`; each round's own figures and their spread are reported too),
 * a probe's are the median of its rounds, and the probes' steps are fitted together. Every round
 * runs the same requests (same seed) and the simulator is deterministic for a seed, so the pooled
 * prediction is the one simulation's. One run of a case is not enough on this VM: three idle runs
 * of the same case (same requests) moved its TTFT P95 by up to 60 % and its mean TPOT by up to 33 %
 * (docs/evaluation.md §5).
 * Since m15n every measured round of a probe or case runs under an interference guard: the steal
 * share of its CPU time (/proc/stat), the cores busy with other work than this bench's process tree
 * (/proc/stat less /proc/self/stat's own and reaped children's jiffies), and a fixed memory-streaming
 * sentinel (~0.3 s) timed before and after it against the run's median of that sentinel. A round
 * over a threshold (`GUARD_THRESHOLDS` in @loramesh/policy: steal 2 %, 0.15 foreign cores, sentinel
 * 1.5×) is measured again, at most twice, then kept and marked; every disturbed attempt is listed in
 * the report (`disturbed_rounds`) and each round's signals are kept (`signals`). None of the signals
 * reads the prediction or the round's latencies. A replay measures nothing and has no guard.
 * Since m15p a sentinel timing over the threshold is timed again and the lower of the two counts (a
 * slowness confined to the sentinel's own ~0.3 s is not the round's), a re-run times its own
 * before-sentinel instead of taking the disturbed attempt's after-sentinel, and the report keeps
 * every sentinel timing (`interferenceGuard.sentinel.timingsMs`). Cases (and the 12 req/s probe,
 * as long as them) run 40 s a round since m15p (20 s before): a 4 req/s case's pooled P95 was as
 * noisy as the target is wide (docs/evaluation.md §5). The steps file keeps each request's arrival
 * next to its TTFT (`requestArrivalsS`) since m15p.
 * Since m15q a fifth probe, disaggregated at the case's 4 req/s (`STEP_PROBES`, as long as the cases,
 * run after the disaggregated case in each round), enters the step-period fit only: with the 2 req/s
 * probe it gives that mode an idle slope of its own instead of the coupled probes'. `--no-step-probes`
 * neither runs nor fits it (the model before); a replay of a run stored before m15q has none.
 * --quick: one round, shorter probes and cases (8 s), for iterating; the numbers are noisier.
 * --replay REPORT.json [--replay-steps STEPS.json]: measure nothing; refit and re-simulate an earlier
 * run from its report and step profiles (`validate-steps*.json`, default: `validate-steps` named like
 * the report), with this code's model: the same fit, prediction and estimators as a measured run
 * (for a run before m15g add `--high-probe-seconds 8`, before m15f also `--duration 12 --probe-seconds 24`,
 * the lengths it ran). `--no-hop-busy`: fit the request hops without their busy term (the model
 * before m15i), to compare. `--no-hybrid-busy-hops`: no wait for hybrid requests that reach a
 * stepping worker (`hybridBusyHopSteps`, the model before m15j). `--no-shared-idle`: no idle term
 * for the modes probed at one rate (the model before m15k). Since m15k the report keeps the run's
 * kernel calibration (`calibration.kernel`) and a replay uses it unless `--calibration` is given.
 * Since m15l the probes' request TTFTs are kept in the steps file (`requestTtftsMs`), and
 * `--pooled-probe-rounds` takes a probe's TTFT P50 and P95 over them pooled (the default stays the
 * median of the rounds); the shared request hops are fitted on the coupled and disaggregated probes,
 * and the hybrid busy-hop term once on top, at most 2 steps. The model before, to compare:
 * `--hop-probes coupledLow,coupledHigh,disaggregated,hybrid --busy-hop-cap 4 --no-idle-shift`.
 * `--hop-wake` (m15o) makes the hops' busy term read each request's wake-up (the idle gap since its
 * executors last stepped, `HOP_WAKE_TAU_S`) rather than the machine's smoothed idle fraction. It is
 * off by default: on the three fresh full runs since, the model without it was closer each time
 * (docs/evaluation.md §5). `--no-hop-wake` is accepted and is the default.
 * m15r's two opt-in forms of the step's idle term, both off by default (neither lowered the error
 * across the nine stored replays, docs/evaluation.md §5): `--idle-scale log` fits it in ln(1 / busy)
 * rather than 1 − busy (`--lend-linear`: the modes that borrow the slope take the linear one), and
 * `--round-busy median` takes each probe round at its mode's and rate's median busy fraction rather
 * than its own in the whole fit, `--round-busy median-slope` in the idle slope's regression only.
 * Since m15u the idle term's regressor is 1 / busy by default (`--idle-scale inverse`; `linear` is
 * the model before): the coupled 4 req/s case's steps sit about halfway between the 2 and 12 req/s
 * probes', not a quarter of the way as a line in 1 − busy puts them. The hybrid mode borrows the
 * coupled slope in 1 − busy (`--lend-linear hybrid`, default; `--lend-linear MODES|none`).
 * Since m15s a case is predicted over its mode's probe rounds' machine states (`--round-states`,
 * opt-in `steps`: each round's measured step time over the fit's price of it): one simulated round
 * per state, the rounds' requests pooled as the measured rounds' are (TTFT P95 over all requests,
 * mean TPOT over all), and the probes refitted with each round simulated in its own state
 * (`--round-state-refits`, default 1). `off` (default) is one state. `hops`, `tail` and
 * `steps+hops` add each round's hop scale fitted on its own TTFT P80 (opt-in: they raised the error
 * across the stored runs). `--coupled-step-probe` (opt-in, +~2.5 min) runs a coupled step probe at
 * 4 req/s as m15q's disaggregated one.
 * Since m15t a sixth probe, hybrid with the rank-aware+rebalancing policy at 6 req/s (`STALL_PROBE`,
 * 31 s, after the hybrid case), fits the provisioner's rebalance stall: the hybrid case (the only
 * one on that policy) has its slow requests at 29–30 s into each round in every stored run. The
 * simulator pauses the executors for the fitted length, ending where the probe's rounds put it, every
 * `REBALANCE_INTERVAL_S`, in cases on that policy. Since m15w the stall is opt-in (`--rebalance-stall`;
 * `--no-rebalance-stall`, the default, runs the probe and prices no stall): m15v removed the worker's
 * GC pause it modelled, and on the stored runs with the probe pricing it never lowered the error. The
 * probe now fits the hybrid busy-hop term (`--busy-hop-probe policy`, m15w). `--no-rebalance-probe`
 * does not run it; `--stall-probe-seconds`,
 * `--stall-probe-rate` set it. To make room the disaggregated step probe runs 30 s (was 40;
 * `--step-probe-seconds`). A replay of a run stored before m15t has no stall probe and no stall.
 * Since m15w the steps file keeps the requests' TTFTs and arrivals at full precision (0.01 ms and
 * 0.1 ms before): the hybrid busy-hop term fitted on the 2 req/s probe's P95 jumped between 1.02 and
 * 1.65 steps when the stored TTFTs moved within their rounding, so a replay did not give the live
 * fit. The term is now fitted on the rebalancing probe's pooled P95 (`--busy-hop-probe policy`,
 * bounded at `--policy-busy-hop-cap`, 3; `--busy-hop-probe hybrid`: the model before), which
 * ran at a rate near the hybrid case's and on its policy; a run without that probe keeps the
 * hybrid probe's fit.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import {
  confirmedSentinel,
  CostModel,
  DEFAULT_CALIBRATION,
  disturbedEntries,
  GUARD_THRESHOLDS,
  guardRound,
  MAX_RERUNS,
  sentinelBaseline,
  SENTINEL_RETIMES,
  type RoundSignals,
  DEFAULT_WORKLOAD,
  fitRequestOverheads,
  hybridBusyHopSteps,
  fitStepPeriods,
  fitRoundScale,
  fitStallSeconds,
  rebalancePauses,
  stallEndS,
  stallExcessMs,
  medianOverRounds,
  pooledOverStates,
  roundStepScale,
  withRoundState,
  type RoundState,
  percentile,
  pooledOverRounds,
  TAIL_QUANTILE,
  HOP_WAKE_TAU_S,
  policyByName,
  simulate,
  slopesOf,
  stepPeriodUs,
  type Calibration,
  type ClusterSpec,
  type ProbeSpec,
  type ProbeSummary,
  type ServingMode,
  type StackProbes,
  type StepPeriodFit,
  type StepShapeSample,
  type WorkloadSpec,
} from "@loramesh/policy";
import { BUNDLED_ADAPTERS, BUNDLED_MODEL, nearestSource, readAdapterSources } from "@loramesh/cli";
import { inspectAdapter, loadModelConfig } from "@loramesh/formats";

const args = process.argv.slice(2);
const json = args.includes("--json");
const flag = (name: string): string | undefined => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const REPO_ROOT = join(__dirname, "..", "..");
const CLI = join(REPO_ROOT, "packages", "cli", "dist", "bin.js");
const RESULTS = join(REPO_ROOT, "bench", "results");
mkdirSync(RESULTS, { recursive: true });
const quick = args.includes("--quick");
const replayFile = flag("--replay");
const replaying = replayFile !== undefined;
// `--no-hop-busy`: the hops without their busy term (m15h's model), to compare against.
const noHopBusy = args.includes("--no-hop-busy");
// `--hop-wake`: the busy term on each request's wake-up, not the machine's smoothed idle fraction
// (m15o; opt-in, see the header). `--no-hop-wake` (the default) wins if both are given.
const hopWake = args.includes("--hop-wake") && !args.includes("--no-hop-wake");
// `--no-hybrid-busy-hops`: no wait for hybrid requests reaching a stepping worker (before m15j).
const noHybridBusyHops = args.includes("--no-hybrid-busy-hops");
// `--no-shared-idle`: a mode probed at one rate gets no idle term (the model before m15k).
const noSharedIdle = args.includes("--no-shared-idle");
// `--no-idle-shift`: a borrowed idle slope applies within the lender's idle fractions (before m15l).
const noIdleShift = args.includes("--no-idle-shift");
// `--no-step-probes`: neither run nor fit the step-only probes (`STEP_PROBES`; the model before m15q).
const noStepProbes = args.includes("--no-step-probes");
// `--idle-scale linear|log|inverse`: the step's idle term in 1 − busy fraction (the model before
// m15u), ln(1 / busy) (m15r) or 1 / busy (m15u, the default since): the stored coupled runs' lone
// decode step drops as much from 2 to 4 req/s as from 4 to 12, which 1 / busy follows and a line in
// 1 − busy does not (it priced the 4 req/s case's steps 10–26 % slow; docs/evaluation.md §5, m15u).
const idleScaleFlag = flag("--idle-scale") ?? "inverse";
if (!["linear", "log", "inverse"].includes(idleScaleFlag)) throw new RangeError("--idle-scale: linear, log or inverse");
// `--lend-linear [MODES|none]` (m15r; MODES, comma-separated, since m15u): with a non-linear idle
// scale the borrowing modes (all, or those listed) take the lender's slope in 1 − busy fraction.
// Default since m15u: `hybrid`. Its case runs at busy 0.3–0.4, beyond every coupled probe (≤ 0.15),
// where 1 / busy is flat, yet its steps ran 0.3–0.9 ms faster than its 2 req/s probe's, as the
// linear slope prices them; the disaggregated mode's case sits within the coupled probes' span.
const lendLinearArg = args.includes("--lend-linear") ? (flag("--lend-linear") ?? "") : "hybrid";
const lendLinearModes: true | ServingMode[] | undefined =
  lendLinearArg === "none"
    ? undefined
    : lendLinearArg === "" || lendLinearArg.startsWith("--")
      ? true
      : lendLinearArg.split(",").map((m) => {
          if (!["coupled", "disaggregated", "hybrid"].includes(m)) throw new RangeError(`--lend-linear: no mode ${m}`);
          return m as ServingMode;
        });
// `--round-busy own|median` (m15r): each probe round's busy fraction in the step fit, its own or its
// mode's and rate's median over the rounds.
const roundBusyFlag = flag("--round-busy") ?? "own";
if (!["own", "median", "median-slope"].includes(roundBusyFlag))
  throw new RangeError("--round-busy: own, median or median-slope");
// `--round-states KIND` (m15s): price the machine's round-to-round variation as the measurement pools
// it: a case is simulated once per round of its mode's probes, each in that round's machine state
// (`RoundState`), and the rounds' requests pooled; the probes are refitted with each round simulated
// in its state. KIND names what a state holds: `steps` (the round's step scale: over the ten stored runs it
// lowered the mean max_error_pct 18.31 → 17.28, but m15s's full run rose 23.70 → 27.84 with it, so
// opt-in; docs/evaluation.md §5), `hops` (its hop scale), `tail` (its hops' σ scale),
// `steps+hops`, `steps+tail`; `off` (default): one state, the fit's.
// `--round-state-quantile Q` (default `TAIL_QUANTILE`): the TTFT quantile a round's hop or tail
// scale is fitted on.
const roundStatesFlag = flag("--round-states") ?? "off";
if (!["off", "steps", "hops", "tail", "steps+hops", "steps+tail"].includes(roundStatesFlag))
  throw new RangeError("--round-states: off, steps, hops, tail, steps+hops or steps+tail");
// `--round-state-pool mode|all` (m15s): a case pools the states of its own mode's probe rounds
// (default), or of every probe round (the machine's states, whatever mode measured them).
const roundStatePool = flag("--round-state-pool") ?? "mode";
if (roundStatePool !== "mode" && roundStatePool !== "all") throw new RangeError("--round-state-pool: mode or all");
const roundStateRefits = Number(flag("--round-state-refits") ?? 1);
if (!Number.isInteger(roundStateRefits) || roundStateRefits < 0)
  throw new RangeError("--round-state-refits: a whole number ≥ 0");
/** Each probe's rounds' machine states by seed, while the fit simulates them in those (m15s). */
const probeStateOf = new Map<keyof StackProbes, Map<number, RoundState>>();
const roundStateQuantile = Number(flag("--round-state-quantile") ?? TAIL_QUANTILE);
if (!(roundStateQuantile > 0 && roundStateQuantile < 100)) throw new RangeError("--round-state-quantile: 0–100");
// `--hop-probes K,K,…`: the probes the shared hops are fitted on (default below; m15h–m15k: all four).
const hopProbesFlag = flag("--hop-probes");
// `--busy-hop-cap N`: the most steps `hybridBusyHopSteps` may reach (m15j–m15k: 4).
const busyHopCapFlag = flag("--busy-hop-cap");
// `--busy-hop-probe policy|hybrid` (m15w): the probe `hybridBusyHopSteps` is fitted on. `hybrid` (the
// model before): the hybrid 2 req/s probe's TTFT P95. `policy`: the rank-aware+rebalancing probe's
// (hybrid, 6 req/s, seeds 2–4; run for the stall since m15t) pooled TTFT P95, simulated the same way:
// the hybrid case's policy at a rate near its own, where the 2 req/s probe reaches a stepping worker
// with a fifth of its requests. The stored runs' rebalancing probes were under-priced at their P95 as
// the hybrid case was (docs/evaluation.md §5, m15w).
const busyHopProbeFlag = flag("--busy-hop-probe") ?? "policy";
if (!["policy", "hybrid"].includes(busyHopProbeFlag)) throw new RangeError("--busy-hop-probe: policy or hybrid");
// `--policy-busy-hop-cap N` (m15w): the bound of the term fitted on the rebalancing probe, 3 steps
// (the hybrid probe's stays `MAX_BUSY_HOP_STEPS`, 2): that probe's P95 holds the wait's tail at 6 req/s,
// not the 2 req/s probe's median wait m15j measured at ~2 steps; at 2 the fit reached its bound in
// four of the five stored runs with the probe, at 3 in three (docs/evaluation.md §5, m15w).
const POLICY_BUSY_HOP_CAP = 3;
const policyBusyHopCap = Number(flag("--policy-busy-hop-cap") ?? POLICY_BUSY_HOP_CAP);
if (!(Number.isFinite(policyBusyHopCap) && policyBusyHopCap >= 0))
  throw new RangeError("--policy-busy-hop-cap: a number of steps, 0 or more");
// `--pooled-probe-rounds`: a probe's TTFT P50 and P95 over its rounds' requests pooled (where every
// round kept them), not the median of its rounds'. Tried in m15l and not the default: in both of its
// full runs (14:05, 14:21) a pooled P95 took in one slow round's tail (coupled 2 req/s: 27.9 ms
// pooled against 21.4 as the median; coupled 12 req/s: 41.1 against 28.9) and priced every TTFT
// higher (max_error_pct 59.2 and 88.5, against 43.3 and 63.3 as the median; docs/evaluation.md §5).
const medianProbeRounds = !args.includes("--pooled-probe-rounds");
// `--tail-quantile Q` (m15m; default `TAIL_QUANTILE`, 80): the TTFT quantile the hops' tail is fitted
// on, over the hop probes' rounds' requests (where every round kept them; runs stored before m15l
// did not and fall back to the median of the rounds' P95s). `--tail-quantile 95` is main's model
// before m15m: the median of the rounds' P50s and P95s. `--tail-rounds median`: the median of the
// rounds' P50s and P_Qs instead of the pooled requests' (default `pooled`).
const tailQuantile = Number(flag("--tail-quantile") ?? TAIL_QUANTILE);
const tailRounds = flag("--tail-rounds") ?? "pooled";
if (tailRounds !== "pooled" && tailRounds !== "median") throw new RangeError("--tail-rounds: pooled or median");
if (!(tailQuantile > 50 && tailQuantile <= 99)) throw new RangeError("--tail-quantile: above 50, at most 99");
// Cases run 20 s a round since m15f (were 12): 80 requests a round at 4 req/s instead of 48, so a
// case's pooled TTFT P95 rests on its 12th-slowest of 240 requests rather than its 7th of 144 (the
// P95s are 11–20 ms now, so one slow request moves it by 20 %; docs/evaluation.md §5). The
// simulator runs the same 20 s of the same requests.
// 40 s since m15p: over the three full runs after the reboot of 2026-12-03 23:32 a 4 req/s case's
// pooled P95 (213 requests) moved by 7–16 % (one standard deviation, bootstrap over its rounds and
// their requests), so a model exact on average still missed 20 % in about one case in ten; doubling
// each round's requests takes that to 5–11 % (bench/results/noise-m15p/, docs/evaluation.md §5).
// A replay prices the cases over the length they ran (the report's `durationS`) unless told.
const storedCaseSeconds = (file: string): number | undefined =>
  (JSON.parse(readFileSync(file, "utf8")) as { cases?: Array<{ durationS?: number }> }).cases?.[0]?.durationS;
const duration = Number(
  flag("--duration") ?? (replayFile ? storedCaseSeconds(replayFile) : undefined) ?? (quick ? 8 : 40),
);
const rounds = Math.max(1, Math.round(Number(flag("--rounds") ?? (quick ? 1 : 3))));
const log = (line: string): void => void process.stderr.write(`validate-simulator: ${line}\n`);

interface Case {
  name: string;
  mode: ServingMode;
  policy: string;
  rate: number;
  /** Workload seed (default 1: the cases; the probes run another). */
  seed?: number;
}

// Short runs (≤ ~20 s of traffic each): modes, policies and a low and a high rate.
const CASES: Case[] = [
  { name: "coupled, rank-aware, 4 req/s", mode: "coupled", policy: "rank-aware", rate: 4 },
  { name: "coupled, round-robin, 12 req/s", mode: "coupled", policy: "round-robin", rate: 12 },
  { name: "disaggregated, rank-aware, 4 req/s", mode: "disaggregated", policy: "rank-aware", rate: 4 },
  { name: "hybrid, rank-aware+rebalancing, 8 req/s", mode: "hybrid", policy: "rank-aware+rebalancing", rate: 8 },
];

const RANKS = [4, 8, 16, 32, 64];

/**
 * Each drawn rank as the mesh serves it. `bench load` registers, for a drawn rank, the bundled
 * adapter of nearest `r`, and the registry records that adapter's largest module rank (pattern-r8
 * has a rank-24 down_proj): the rank the worker's step profile sums. The simulator draws the same
 * adapters (the draw picks an index into the list), so it is given these ranks in the same order.
 */
function servedRanks(ranks: readonly number[]): number[] {
  const sources = readAdapterSources(BUNDLED_ADAPTERS);
  const model = loadModelConfig(BUNDLED_MODEL);
  return ranks.map((r) => inspectAdapter(join(BUNDLED_ADAPTERS, nearestSource(r, sources) as string), model).rank);
}
const SERVED_RANKS = servedRanks(RANKS);

/** The workload `loramesh bench load` runs with its defaults (same seed: the same requests). */
const workloadAt = (rate: number, seed = 1): WorkloadSpec => ({
  ...DEFAULT_WORKLOAD,
  adapters: 12,
  ranks: SERVED_RANKS,
  zipf: 1.2,
  rate,
  duration,
  promptMedian: 24,
  outputMedian: 16,
  lengthSigma: 0.4,
  seed,
});

function cli(argv: string[], env: NodeJS.ProcessEnv = process.env): string {
  const r = spawnSync(process.execPath, [CLI, ...argv], {
    cwd: REPO_ROOT,
    env,
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

/** /proc/stat's first line, jiffies by column (user nice system idle iowait irq softirq steal …). */
function statJiffies(): number[] | undefined {
  try {
    return (readFileSync("/proc/stat", "utf8").split("\n")[0] as string).trim().split(/\s+/).slice(1).map(Number);
  } catch {
    return undefined;
  }
}

/** CPU jiffies of this process and its reaped children (/proc/self/stat utime, stime, cutime, cstime). */
function ownJiffies(): number | undefined {
  try {
    const stat = readFileSync("/proc/self/stat", "utf8");
    const rest = stat
      .slice(stat.lastIndexOf(")") + 2)
      .split(" ")
      .map(Number);
    // Fields 14–17 of the line; `rest` starts at field 3 (the state).
    return (rest[11] ?? 0) + (rest[12] ?? 0) + (rest[13] ?? 0) + (rest[14] ?? 0);
  } catch {
    return undefined;
  }
}

/**
 * The guard's sentinel (m15n): a fixed amount of memory streaming (six chunks of 16 passes over a
 * 64 MiB array, ~0.3 s on this VM when undisturbed), timed as the median chunk. It runs in this
 * process between the mesh's runs, on a machine otherwise idle, so it reads the machine (the
 * hypervisor's share, other tenants' memory bandwidth), not the mesh.
 */
let sentinelArray: Float64Array | undefined;
// The sums go here so that the loop's work is used (a property: never read, on purpose).
const sentinelSums = { total: 0 };
function sentinelChunkMs(a: Float64Array, passes: number): number {
  const t = process.hrtime.bigint();
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  for (let p = 0; p < passes; p++)
    for (let i = 0; i < a.length; i += 4) {
      s0 += a[i] as number;
      s1 += a[i + 1] as number;
      s2 += a[i + 2] as number;
      s3 += a[i + 3] as number;
    }
  sentinelSums.total += s0 + s1 + s2 + s3;
  return Number(process.hrtime.bigint() - t) / 1e6;
}
function sentinelMs(): number {
  if (!sentinelArray) {
    sentinelArray = new Float64Array(8 << 20);
    for (let i = 0; i < sentinelArray.length; i++) sentinelArray[i] = i & 255;
    // Until the JIT has compiled the loop (the first calls run several times slower).
    for (let k = 0; k < 4; k++) sentinelChunkMs(sentinelArray, 4);
  }
  const chunks = Array.from({ length: 6 }, () => sentinelChunkMs(sentinelArray as Float64Array, 16));
  return median(chunks);
}
/** Every sentinel timing of this run (ms), re-timings included; their median is the baseline. */
const sentinelTimings: number[] = [];
let lastSentinelMs: number | undefined;
function timeSentinelOnce(): number {
  const ms = sentinelMs();
  sentinelTimings.push(ms);
  return ms;
}
/** One side of a run's sentinel: a slow timing is timed again before it counts (m15p). */
function timeSentinel(): number {
  const { ms } = confirmedSentinel(timeSentinelOnce, () => sentinelBaseline(sentinelTimings));
  lastSentinelMs = ms;
  return ms;
}

function calibration(): { calibration: Calibration; file: string } {
  const given = flag("--calibration");
  const file = given ?? join(RESULTS, "validate-calibration.json");
  // A replay uses the stored kernel calibration (it prices only the rank, 0.1 µs per unit).
  if (!given && flag("--replay") === undefined) {
    log("calibrating this machine (loramesh calibrate)");
    cli(["calibrate", "--out", file]);
  }
  const parsed = JSON.parse(readFileSync(file, "utf8")) as Partial<Calibration>;
  return { calibration: { ...DEFAULT_CALIBRATION, ...parsed }, file };
}

/** The probes run other seeds than the cases: the fit never sees the requests it predicts. */
const PROBE_SEED = 2;
/**
 * Each round of the probes runs its own seed (2, 3, 4; was 2 in every round before m15g), so the
 * fit averages over three request mixes instead of carrying one mix's cost to every case: in the
 * runs of 20:47–22:27 the cases' steps ran 8–23 % faster than their probes', and the m15f order
 * test put that on seed 2's requests, whichever ran first (docs/evaluation.md §5). A probe's
 * prediction is then the median of its rounds' simulations (`medianOverRounds`), as its measured
 * figures are the median of its rounds.
 */
const PROBE_SEEDS = [2, 3, 4];
const probeSeed = (round: number): number => PROBE_SEEDS[round % PROBE_SEEDS.length] as number;

/**
 * The serving stack's own cost (engine loop, per-token streaming through the router, the LoRA
 * server's ring round trips, the hops of a request between processes, all under this machine's
 * contention) is not in the kernel calibration. Four probes of the real mesh measure it: coupled
 * at a low and a high rate, disaggregated and hybrid at the low rate. The worker times every
 * engine step itself (`--step-profile`), and `fitStepPeriods` fits a step period by batch shape
 * (sequences, prefill tokens, sequences ending, rank sum), per mode, on the probes' steps, and what
 * a run's first step costs beyond that; then `fitRequestOverheads` fits the per-request hops, one
 * distribution for every mode, to all four probes' TTFT P50 and P95 (the low-rate ones before m15h). The cases then
 * run at other rates, policies and modes, with other requests.
 */
// 2 req/s for at least 24 s a round: ~48 requests a run or more, so a run's P95 is not just its slowest request (the
// first, which also opens connections: 10-s rounds put the disaggregated probe's P95 at 102–119 ms
// in all three, against a 21–24 ms median), and still little queueing. 15-s rounds (30 requests)
// left the request hops' tail, fitted on the median of three round P95s, 20–40 % off the cases'
// pooled P95 in either direction (idle runs of 16:51 and 17:03).
// 36 s since m15f (72 requests a round): the request hops' tail is fitted on the median of the
// rounds' P95s, and in the coordinator's run of 21:16 the disaggregated probe's rounds put it at
// 11.7, 17.8 and 33.7 ms (each its third-slowest of 48), which priced three of the four cases' TTFT 14–27 % high.
// `--probe-seconds` sets them (a replay of a run before m15f: 24).
const low = { rate: 2, seconds: Number(flag("--probe-seconds") ?? (quick ? 24 : 36)) };
const PROBES: Record<keyof StackProbes, Case & { seconds: number }> = {
  coupledLow: { name: `probe: coupled, ${low.rate} req/s`, mode: "coupled", policy: "rank-aware", ...low },
  coupledHigh: {
    // At the highest case's rate (was 10 req/s for 6 s): the same step ran 10–20 % faster at 12 req/s
    // than at 2–4 (docs/evaluation.md §5), so the fit sees steps at the case's level of busy. As long
    // as the cases since m15g (20 s, was 8): that case's steps ran 8–23 % faster than this probe's, and
    // a longer run stepped 3–8 % faster in m15f's run-length pairs; equal lengths take that out.
    // `--high-probe-seconds` sets it (a replay of a run before m15g: 8).
    name: "probe: coupled, 12 req/s",
    mode: "coupled",
    policy: "rank-aware",
    rate: 12,
    seconds: Number(flag("--high-probe-seconds") ?? duration),
  },
  disaggregated: {
    name: `probe: disaggregated, ${low.rate} req/s`,
    mode: "disaggregated",
    policy: "rank-aware",
    ...low,
  },
  hybrid: { name: `probe: hybrid, ${low.rate} req/s`, mode: "hybrid", policy: "rank-aware", ...low },
};

/**
 * Probes whose steps enter the step-period fit only, not the request hops' (m15q). The disaggregated
 * mode was probed at one rate (2 req/s) and took the coupled probes' idle slope; in the 40-s runs of
 * 04:25–05:45 its 4 req/s case's lone decode steps ran 0.73 ms against its probe's 1.05 (busy 0.055
 * against 0.035), a drop the coupled slope prices at ~0.09 ms, and the case's mean TPOT came out
 * 16–27 % high. A second disaggregated probe at the case's rate, as long as the cases, lets that mode
 * fit its own idle slope across its two rates (`MIN_RATE_IDLE_SPREAD`). Seeds as the other probes'.
 */
const STEP_PROBES: Record<"disaggregatedHigh" | "coupledMid", Case & { seconds: number }> = {
  disaggregatedHigh: {
    name: "probe: disaggregated, 4 req/s",
    mode: "disaggregated",
    policy: "rank-aware",
    rate: 4,
    // 30 s since m15t (was as long as the cases, 40 s): the time for the rebalance stall's probe in
    // a run of ~22 min; `--step-probe-seconds` sets it.
    seconds: Number(flag("--step-probe-seconds") ?? flag("--high-probe-seconds") ?? (quick ? duration : 30)),
  },
  coupledMid: {
    name: "probe: coupled, 4 req/s",
    mode: "coupled",
    policy: "rank-aware",
    rate: 4,
    seconds: Number(flag("--high-probe-seconds") ?? duration),
  },
};
type StepProbeKey = keyof typeof STEP_PROBES;
// `--coupled-step-probe` (m15s, opt-in): a coupled probe at the 4 req/s case's rate too, run after
// that case (+~2.5 min a run), so the coupled idle slope is fitted across three rates.
const coupledStepProbe = args.includes("--coupled-step-probe");
const STEP_PROBE_ORDER: StepProbeKey[] = noStepProbes
  ? []
  : coupledStepProbe
    ? ["disaggregatedHigh", "coupledMid"]
    : ["disaggregatedHigh"];
/** Where a step-only probe runs in a round: after the case of its mode (the drift on both sides). */
const STEP_PROBE_AFTER_CASE: Record<StepProbeKey, number> = { disaggregatedHigh: 2, coupledMid: 0 };

/**
 * The provisioner's default `--rebalance-interval-ms` (services/provisioner/src/options.ts): with the
 * rank-aware+rebalancing policy it re-places adapters this often, and the mesh stalls as it does.
 */
const REBALANCE_INTERVAL_S = 30;
/**
 * The rebalance stall's probe (m15t): hybrid, the rebalancing policy, at another rate than the
 * hybrid case (6 req/s, not 8) and the probes' seeds, run after that case, long enough to hold the
 * rebalance ~30 s into the load. The hybrid case's slow requests sit at 29–30 s in every stored run
 * and no probe ran that policy (docs/evaluation.md §5, m15t). Its requests fit the stall
 * (`fitRebalanceStall`) and, since m15w, the hybrid busy-hop term (`fitPolicyBusyHops`).
 * `--no-rebalance-probe`: not run (nor fitted); `--rebalance-stall`: the stall priced (m15t–m15v's
 * default; `--no-rebalance-stall`, the default since m15w: run and reported, not used). Not with
 * `--quick`, whose runs end before the rebalance.
 */
const STALL_PROBE: Case & { seconds: number } = {
  name: "probe: hybrid, rank-aware+rebalancing, 6 req/s",
  mode: "hybrid",
  policy: "rank-aware+rebalancing",
  // `--stall-probe-rate`: another rate (for a stand-in replay of a stored run's case, m15t).
  rate: Number(flag("--stall-probe-rate") ?? 6),
  seconds: Number(flag("--stall-probe-seconds") ?? 31),
};
const runStallProbe = !quick && !args.includes("--no-rebalance-probe");
// Opt-in since m15w (the stall it fits, the worker's first full GC, is gone since m15v).
const useStall = runStallProbe && args.includes("--rebalance-stall") && !args.includes("--no-rebalance-stall");
/** Where the stall probe runs in a round: after the hybrid case. */
const STALL_PROBE_AFTER_CASE = 3;
/** The fitted stall: where it ends (s into a run) and how long it lasts (absent: none fitted). */
let rebalanceStall: { endS: number; seconds: number } | undefined;

/**
 * The probes the shared request hops are fitted on (`--hop-probes`). Since m15l: both coupled
 * probes and the disaggregated one, not the hybrid probe. The hybrid probe's tail holds the wait of
 * its requests that reach a stepping worker, which has its own term (`hybridBusyHopSteps`, fitted on
 * that probe after the hops); with the probe in the hops' fit too (m15h–m15k) the two terms were
 * refitted around each other, and in the runs of 11:56 and 12:24 a hybrid probe that stepped ~23 %
 * slower than its case raised the shared tail for every mode and put the term at its bound
 * (docs/evaluation.md §5, m15l).
 */
const HOP_PROBES: ReadonlyArray<keyof StackProbes> = (
  hopProbesFlag?.split(",") ?? ["coupledLow", "coupledHigh", "disaggregated"]
).map((k) => {
  if (!(k in PROBES)) throw new RangeError(`--hop-probes: no probe ${JSON.stringify(k)}`);
  return k as keyof StackProbes;
});

function probeOverheads(
  cal: Calibration,
  measured: Record<keyof StackProbes, RoundsRun>,
  stepOnly: Partial<Record<StepProbeKey, RoundsRun>>,
): { calibration: Calibration; probes: unknown[] } {
  const specs = PROBES;
  const stepOnlyKeys = STEP_PROBE_ORDER.filter((k) => stepOnly[k] !== undefined);
  // Each round of each probe is its own run: the idle term is fitted on differences between runs.
  // Each run carries its rate: a mode probed at two rates fits its own idle slope (m15q). The
  // step-only probes come last, so the coupled mode stays the idle slope's lender.
  const profileRuns = (spec: Case, run: RoundsRun) =>
    run.rounds.map((r) => ({
      mode: spec.mode,
      steps: r.stepProfile,
      ...(r.firstStep ? { first: r.firstStep } : {}),
      busyFraction: busyFractionOf(r),
      rate: spec.rate,
    }));
  const stepPeriods = fitStepPeriods(
    [
      ...(Object.keys(specs) as Array<keyof StackProbes>).flatMap((k) => profileRuns(specs[k], measured[k])),
      ...stepOnlyKeys.flatMap((k) => profileRuns(STEP_PROBES[k], stepOnly[k] as RoundsRun)),
    ],
    // The rank's cost is the LoRA kernel's, measured by `loramesh calibrate`: per unit of rank and
    // decode token, at every LoRA site of the step.
    {
      perRankUs: cal.loraUsPerTokenRank * cal.sitesPerStep,
      ...(noSharedIdle ? { shareIdle: false } : {}),
      ...(noIdleShift ? { shiftIdle: false } : {}),
      ...(idleScaleFlag === "log" || idleScaleFlag === "inverse" ? { idleScale: idleScaleFlag } : {}),
      ...(roundBusyFlag === "median" ? { rateMedianBusy: "all" as const } : {}),
      ...(roundBusyFlag === "median-slope" ? { rateMedianBusy: "slope" as const } : {}),
      ...(lendLinearModes !== undefined ? { lendLinear: lendLinearModes } : {}),
    },
  );
  const summary = (m: Measured): ProbeSummary => ({
    ttftP50Ms: m.ttftMs.p50,
    ttftP95Ms: m.ttftMs.p95,
    tpotMeanMs: m.tpotMs.mean,
  });
  // With `--pooled-probe-rounds` (m15l) a probe's TTFT P50 and P95 are taken over its rounds'
  // requests pooled wherever every round kept them (`bench load --per-request`; runs stored before
  // m15l did not), and its prediction likewise over the rounds' simulated requests pooled
  // (`pooledOverRounds`). The mean TPOT stays the rounds' median. Default: the median of the rounds.
  const pooledProbe = (k: keyof StackProbes): boolean =>
    !medianProbeRounds && measured[k].rounds.every((r) => (r.requests?.length ?? 0) > 0);
  // Since m15m the hop probes' tail is fitted on their P80 (`--tail-quantile`), measured and
  // simulated over the rounds' requests pooled (or, `--tail-rounds median`, as the median of the
  // rounds'); the hybrid probe keeps its P95 (its busy-hop term is fitted on it).
  const tailProbe = (k: keyof StackProbes): boolean =>
    medianProbeRounds &&
    tailQuantile !== 95 &&
    HOP_PROBES.includes(k) &&
    measured[k].rounds.every((r) => (r.requests?.length ?? 0) > 0);
  const sortedTtfts = (runs: readonly { requests?: ReadonlyArray<{ ttftMs: number }> }[]): number[] =>
    runs.flatMap((r) => (r.requests ?? []).map((q) => q.ttftMs)).sort((a, b) => a - b);
  const measuredSummary = (k: keyof StackProbes): ProbeSummary => {
    const run = measured[k];
    if (tailProbe(k)) {
      if (tailRounds === "median") {
        const each = run.rounds.map((r) => sortedTtfts([r]));
        return {
          ...summary(run),
          ttftTailMs: median(each.map((t) => percentile(t, tailQuantile))),
        };
      }
      const ttft = sortedTtfts(run.rounds);
      return {
        ttftP50Ms: percentile(ttft, 50),
        ttftP95Ms: percentile(ttft, 95),
        tpotMeanMs: run.tpotMs.mean,
        ttftTailMs: percentile(ttft, tailQuantile),
      };
    }
    if (!pooledProbe(k)) return summary(run);
    const ttft = run.rounds.flatMap((r) => (r.requests ?? []).map((q) => q.ttftMs)).sort((a, b) => a - b);
    return { ttftP50Ms: percentile(ttft, 50), ttftP95Ms: percentile(ttft, 95), tpotMeanMs: run.tpotMs.mean };
  };
  // Each probe's busy fraction, the median of its rounds' (the hops' busy term is fitted across them).
  const busyOf = (k: keyof StackProbes): { busyFraction?: number } => {
    const b = measured[k].rounds.map(busyFractionOf).filter((x): x is number => x !== undefined);
    return b.length > 0 ? { busyFraction: median(b) } : {};
  };
  const probes: StackProbes = {
    coupledLow: { ...specs.coupledLow, ...measuredSummary("coupledLow"), ...busyOf("coupledLow") },
    coupledHigh: { ...specs.coupledHigh, ...measuredSummary("coupledHigh"), ...busyOf("coupledHigh") },
    disaggregated: { ...specs.disaggregated, ...measuredSummary("disaggregated"), ...busyOf("disaggregated") },
    hybrid: { ...specs.hybrid, ...measuredSummary("hybrid"), ...busyOf("hybrid") },
  };
  const specOf = (p: ProbeSpec): Case & { seconds: number } =>
    Object.values(specs).find((c) => c.mode === p.mode && c.rate === p.rate) as Case & { seconds: number };
  const keyOf = (p: ProbeSpec): keyof StackProbes =>
    (Object.keys(specs) as Array<keyof StackProbes>).find((k) => specs[k] === specOf(p)) as keyof StackProbes;
  // A probe's measured figures are the median of its rounds, so its prediction is the median of its
  // rounds' simulations, each with the round's seed (the same estimator on both sides).
  const simulateProbe = (p: ProbeSpec, k: Calibration): ProbeSummary => {
    const c = specOf(p);
    const seeds = measured[keyOf(p)].rounds.map((r) => r.seed ?? PROBE_SEED);
    // With `--round-states`, from the second fit on, each probe round is simulated in its own
    // machine state (m15s), as its case's rounds are: the hops fitted then are a round's, not the
    // spread between rounds too.
    const byState = probeStateOf.get(keyOf(p));
    const costOf = (seed: number): CostModel => {
      const st = byState?.get(seed);
      return new CostModel(st ? withRoundState(k, st) : k);
    };
    if (tailProbe(keyOf(p))) {
      const round = (seed: number): ProbeSummary & { ttftsMs: readonly number[] } => {
        const r = predict({ ...c, seed }, costOf(seed), c.seconds, true);
        return { ...summary(r), ttftsMs: r.ttftsMs ?? [] };
      };
      if (tailRounds === "pooled") return pooledOverRounds(seeds, round, tailQuantile);
      return medianOverRounds(seeds, (seed) => {
        const r = round(seed);
        return {
          ...r,
          ttftTailMs: percentile(
            [...r.ttftsMs].sort((a, b) => a - b),
            tailQuantile,
          ),
        };
      });
    }
    if (pooledProbe(keyOf(p)))
      return pooledOverRounds(seeds, (seed) => {
        const r = predict({ ...c, seed }, costOf(seed), c.seconds, true);
        return { ...summary(r), ttftsMs: r.ttftsMs ?? [] };
      });
    return medianOverRounds(seeds, (seed) => summary(predict({ ...c, seed }, costOf(seed), c.seconds)));
  };
  // One request-hop distribution for every mode (the hops are the same processes in every mode),
  // fitted on all four probes together since m15h (was the two low-rate ones): 12 rounds, ~1150
  // requests, instead of 6 rounds of ~72. The tail is set by each probe's P95, the median of three
  // rounds' ~4th-slowest request, and one such figure moved the whole fit: in the run of 05:10 the
  // coupled 2 req/s probe's 25.1 ms (rounds 20.3, 25.1, 26.9; the other probes 19.1–22.9) put the
  // hops' P95 at 18.9 ms and the disaggregated case's TTFT 44.6 % high. The two probes' separate
  // fits had differed by mode in no consistent direction (m15e), and the hybrid case's TTFT, whose
  // probe the fit left out, was under-predicted in all seven stored runs (docs/evaluation.md §5).
  // Since m15i the hops have a busy term (`requestOverheadPerIdleUs`): the coupled 12 req/s probe's
  // TTFT P50 came out 0.3–1.7 ms below the 2 req/s probe's in all seven stored runs, though its
  // requests queue longer, and in six of them the disaggregated 4 req/s case's P95 below its 2 req/s
  // probe's: the hops get cheaper as the machine gets busier, like the step (its idle term). Only the
  // coupled probes run two rates, so the slope is theirs, shared by every mode (each other mode's
  // probe rounds span under 0.02 of busy fraction), and priced at the executors' busy fraction when
  // a request is sent, within the span those two probes ran (docs/evaluation.md §5, m15i).
  const calibrated = fitRequestOverheads(probes, { ...cal, stepPeriods }, simulateProbe, {
    sharedHops: HOP_PROBES,
    ...(noHopBusy ? {} : { hopsByBusy: ["coupledLow", "coupledHigh"] as const }),
    ...(noHybridBusyHops ? {} : { hybridBusyHops: "hybrid" as const }),
    ...(busyHopCapFlag !== undefined ? { maxHybridBusyHopSteps: Number(busyHopCapFlag) } : {}),
    // `--hop-wake`: the busy term reads each request's own wake-up: its TTFT grows with the idle gap
    // before it (docs/evaluation.md §5, m15o). Measured, but not shown to predict better: opt-in.
    ...(hopWake ? { hopWakeTauS: HOP_WAKE_TAU_S } : {}),
  });

  const file = join(replaying ? tmpdir() : RESULTS, "validate-calibration-mesh.json");
  writeFileSync(file, `${JSON.stringify(calibrated, null, 2)}\n`);
  const ms = (us: number | undefined): string => ((us ?? 0) / 1000).toFixed(2);
  const k = calibrated;
  const modeLine = (m: ServingMode): string => {
    const k = slopesOf(stepPeriods, m);
    return `${m} ${ms(stepPeriods.fixedUs[m])} ms + ${ms(k.perSequenceUs)} per further sequence + ${ms(k.perPrefillTokenUs)} per prompt token + ${ms(k.perFinishUs)} per sequence ending + ${(k.perRankUs / 1000).toFixed(4)} per unit of rank + ${ms(k.perIdleUs)} × idle fraction, first step + ${ms(stepPeriods.firstStepUs?.[m])}`;
  };
  log(
    `probes: step period ${(["coupled", "disaggregated", "hybrid"] as const).map(modeLine).join("; ")}; stream end ${ms(k.streamEndUs)} ms; request overhead median / P95 ${ms(k.requestOverheadUs)} / ${ms(k.requestOverheadP95Us)} ms + ${ms(k.requestOverheadPerIdleUs)} × (${k.requestOverheadWakeTauS ? `wake fraction, τ ${k.requestOverheadWakeTauS} s,` : "idle fraction"} − ${(k.requestOverheadIdleRef ?? 0).toFixed(3)}), idle within ${JSON.stringify(k.requestOverheadIdleRange?.map((x) => Number(x.toFixed(3))) ?? null)} (disaggregated ${ms(k.remoteRequestOverheadUs)} / ${ms(k.remoteRequestOverheadP95Us)} ms) → ${file}`,
  );
  const probeEntries: unknown[] = [
    ...Object.entries(specs).map(([key, c]) => {
      const fitted = simulateProbe(probes[key as keyof StackProbes], calibrated);
      const run = measured[key as keyof StackProbes];
      const each = run.rounds;
      const pooled = pooledProbe(key as keyof StackProbes);
      return {
        case: c.name,
        seed: each[0]?.seed ?? PROBE_SEED,
        seeds: each.map((r) => r.seed ?? PROBE_SEED),
        // What the hops were fitted to: the rounds' requests pooled, or the median of the rounds.
        ttftEstimator: tailProbe(key as keyof StackProbes)
          ? `P50 and P${tailQuantile} (the hops' tail) of ${tailRounds === "pooled" ? "the pooled requests" : "each round, their median"}`
          : pooled
            ? "pooled requests"
            : "median of rounds",
        ...(tailProbe(key as keyof StackProbes)
          ? {
              tail: {
                quantile: tailQuantile,
                measuredMs: probes[key as keyof StackProbes].ttftTailMs,
                fittedMs: fitted.ttftTailMs,
                measuredP50Ms: probes[key as keyof StackProbes].ttftP50Ms,
                fittedP50Ms: fitted.ttftP50Ms,
              },
            }
          : {}),
        hopsFittedOn: HOP_PROBES.includes(key as keyof StackProbes),
        measured: {
          ttftMs: run.ttftMs,
          ...(pooled
            ? {
                pooledTtftMs: {
                  p50: probes[key as keyof StackProbes].ttftP50Ms,
                  p95: probes[key as keyof StackProbes].ttftP95Ms,
                  requests: run.rounds.reduce((a, r) => a + (r.requests?.length ?? 0), 0),
                },
              }
            : {}),
          tpotMs: run.tpotMs,
          throughputTokensPerSecond: run.throughputTokensPerSecond,
          completed: run.completed,
          errors: run.errors,
          busyCores: run.busyCores,
          rounds: each.map(roundReport),
        },
        steps: stepSummary(each, stepPeriods, c.mode),
        fitted,
      };
    }),
    ...stepOnlyKeys.map((key) => {
      const c = STEP_PROBES[key];
      const run = stepOnly[key] as RoundsRun;
      const cost = new CostModel(calibrated);
      const seeds = run.rounds.map((r) => r.seed ?? PROBE_SEED);
      return {
        case: c.name,
        seed: seeds[0],
        seeds,
        // Fitted into the step periods only; its TTFT is reported, not fitted to.
        stepsOnly: true,
        hopsFittedOn: false,
        measured: {
          ttftMs: run.ttftMs,
          tpotMs: run.tpotMs,
          throughputTokensPerSecond: run.throughputTokensPerSecond,
          completed: run.completed,
          errors: run.errors,
          busyCores: run.busyCores,
          rounds: run.rounds.map(roundReport),
        },
        steps: stepSummary(run.rounds, stepPeriods, c.mode),
        fitted: medianOverRounds(seeds, (seed) => summary(predict({ ...c, seed }, cost, c.seconds))),
      };
    }),
  ];
  return { calibration: calibrated, probes: probeEntries };
}

interface Measured {
  /** The run's length as the load generator timed it (absent in a prediction). */
  durationS?: number;
  ttftMs: { p50: number; p95: number };
  tpotMs: { mean: number };
  throughputTokensPerSecond: number;
  errors: number;
  completed: number;
  /** Each completed request (`bench load --per-request`). */
  requests?: Array<{ ttftMs: number; tpotMs: number; arrivalS?: number }>;
  /** A prediction's requests' TTFTs (`predict(…, keepTtfts)`). */
  ttftsMs?: number[];
  /** Their arrivals (s), in the same order. */
  arrivalsS?: number[];
}

/** `stepProfile`: every step but the worker's first, which is `firstStep` (its one-off costs). */
type MeasuredRun = Measured & {
  busyCores: number | null;
  /** What the machine did apart from the mesh over this round (measured runs since m15n). */
  signals?: RoundSignals;
  /** How many times the round was measured (re-runs of disturbed ones; absent: once). */
  attempts?: number;
  /** Every attempt was disturbed; this, the last, was kept (m15n). */
  keptDisturbed?: boolean;
  stepProfile: StepShapeSample[];
  firstStep?: StepShapeSample;
  /** The workload seed the round ran (a probe's; absent: the case's or `PROBE_SEED`). */
  seed?: number;
};

/** A probe's or case's rounds: their figures (`ofRounds`), the steps of all rounds, and each round. */
type RoundsRun = MeasuredRun & { rounds: MeasuredRun[] };

const median = (values: readonly number[]): number => {
  const v = [...values].sort((a, b) => a - b);
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
};

/**
 * A probe's or case's figures over its rounds. A case's TTFT percentiles and mean TPOT are taken over
 * the requests of all rounds pooled: with ~48 requests a 12-s round's P95 is its third-slowest
 * request, which moved 30–40 % between rounds of the same requests (docs/evaluation.md §5); pooled,
 * it rests on three times as many. A probe's stay the median of its rounds (`pool` false): pooled,
 * the 2 req/s probe's P95 took one round's tail (48.6 ms against 26.7–51.0 by round in the run of
 * 16:51; each run's first request, which opens the connections, is a likely part of it), and the
 * request hops' tail fitted to it put every case's TTFT P95 37–110 % high. Throughput and busy
 * cores are the median of the rounds.
 */
function ofRounds(runs: MeasuredRun[], pool = true): RoundsRun {
  const m = (f: (r: MeasuredRun) => number): number => median(runs.map(f));
  const busy = runs.map((r) => r.busyCores).filter((b): b is number => b !== null);
  const pooled = runs.flatMap((r) => r.requests ?? []);
  const ttft = pooled.map((q) => q.ttftMs).sort((a, b) => a - b);
  return {
    ttftMs: pool
      ? { p50: percentile(ttft, 50), p95: percentile(ttft, 95) }
      : { p50: m((r) => r.ttftMs.p50), p95: m((r) => r.ttftMs.p95) },
    tpotMs: {
      mean: pool ? pooled.reduce((a, q) => a + q.tpotMs, 0) / Math.max(1, pooled.length) : m((r) => r.tpotMs.mean),
    },
    throughputTokensPerSecond: m((r) => r.throughputTokensPerSecond),
    errors: runs.reduce((a, r) => a + r.errors, 0),
    completed: m((r) => r.completed),
    busyCores: busy.length > 0 ? median(busy) : null,
    stepProfile: runs.flatMap((r) => r.stepProfile),
    requests: pooled,
    rounds: runs,
  };
}

/** How far a figure moved between rounds: (max − min) / median, in %. */
function spreadPct(runs: readonly MeasuredRun[], f: (r: MeasuredRun) => number): number {
  const v = runs.map(f);
  const mid = median(v);
  return mid === 0 ? 0 : (100 * (Math.max(...v) - Math.min(...v))) / mid;
}

/** The executor's busy fraction over a run: its steps' summed periods over the run's length. */
function busyFractionOf(run: MeasuredRun): number | undefined {
  if (!run.durationS || run.stepProfile.length === 0) return undefined;
  return Math.min(1, run.stepProfile.reduce((a, s) => a + s.sumUs, 0) / 1e6 / run.durationS);
}

/** The mean lone decode step (one sequence, no prompt tokens) of some step samples, in ms; null if none. */
function singleDecodeStepMs(samples: readonly StepShapeSample[]): number | null {
  const one = samples.filter((s) => s.sequences === 1 && s.prefillTokens === 0);
  const n = one.reduce((a, s) => a + s.count, 0);
  return n > 0 ? one.reduce((a, s) => a + s.sumUs, 0) / n / 1000 : null;
}

/**
 * What the worker's own clock said about a run's steps, next to the fit: the mean period of
 * one-sequence decode steps (the same shape in every run, so a gap here is the machine or the
 * process warming up, not the batch) and of all steps, measured and as the fit prices them.
 */
function stepSummary(
  runs: readonly MeasuredRun[],
  fit: StepPeriodFit,
  mode: ServingMode,
): Record<string, number | null | Array<number | null> | ShapeRow[]> {
  // Each step with its run's busy fraction, so the fit prices it as it ran.
  const steps = runs.flatMap((r) => r.stepProfile.map((s) => ({ ...s, busyFraction: busyFractionOf(r) })));
  const n = steps.reduce((a, s) => a + s.count, 0);
  const fitted = steps.reduce((a, s) => a + s.count * (stepPeriodUs(fit, mode, s) ?? 0), 0);
  const ms = (us: number, count: number): number | null => (count > 0 ? us / count / 1000 : null);
  return {
    steps: n,
    busyFractionByRound: runs.map((r) => busyFractionOf(r) ?? null),
    meanSequences: n > 0 ? steps.reduce((a, s) => a + s.count * s.sequences, 0) / n : 0,
    singleDecodeStepMs: singleDecodeStepMs(steps),
    meanStepMs: ms(
      steps.reduce((a, s) => a + s.sumUs, 0),
      n,
    ),
    fittedMeanStepMs: ms(fitted, n),
    // Each round's lone decode steps (m15n): a round stepping far slower than its siblings is the
    // trace a disturbed machine leaves (18:39: 2.90 ms against 0.78–0.88); reported, not a guard signal.
    singleDecodeStepMsByRound: runs.map((r) => singleDecodeStepMs(r.stepProfile)),
    // Each round's first step (the worker's first request's prefill), out of the figures above.
    firstStepMsByRound: runs.map((r) => (r.firstStep ? r.firstStep.sumUs / r.firstStep.count / 1000 : null)),
    byShape: byShape(steps, fit, mode),
  };
}

type StepPeriodSample = StepShapeSample & { busyFraction: number | undefined };

/** One batch shape's steps: how many, their measured mean period and the fit's (ms). */
interface ShapeRow {
  sequences: number;
  prefillTokens: number;
  finished: number;
  rankSum: number;
  steps: number;
  measuredMs: number;
  fittedMs: number;
}

/** The most frequent shapes (prompt tokens in buckets of 8), measured next to the fit. */
function byShape(steps: StepPeriodSample[], fit: StepPeriodFit, mode: ServingMode, top = 6): ShapeRow[] {
  const rows = new Map<string, ShapeRow & { sumUs: number; fitUs: number }>();
  for (const s of steps) {
    const prefill = Math.ceil(s.prefillTokens / 8) * 8;
    const key = `${s.sequences}/${prefill}/${s.finished ?? 0}/${s.rankSum ?? 0}`;
    const row = rows.get(key) ?? {
      sequences: s.sequences,
      prefillTokens: prefill,
      finished: s.finished ?? 0,
      rankSum: s.rankSum ?? 0,
      steps: 0,
      measuredMs: 0,
      fittedMs: 0,
      sumUs: 0,
      fitUs: 0,
    };
    row.steps += s.count;
    row.sumUs += s.sumUs;
    row.fitUs += s.count * (stepPeriodUs(fit, mode, s) ?? 0);
    rows.set(key, row);
  }
  return [...rows.values()]
    .sort((a, b) => b.steps - a.steps)
    .slice(0, top)
    .map(({ sumUs, fitUs, ...r }) => ({ ...r, measuredMs: sumUs / r.steps / 1000, fittedMs: fitUs / r.steps / 1000 }));
}

let runs = 0;

function runReal(c: Case, seconds = duration, guard = false, rerun = false): MeasuredRun {
  log(`real mesh: ${c.name}, ${seconds} s`);
  // The worker keeps its step periods by batch shape in this file (one worker per run here).
  const profile = join(tmpdir(), `loramesh-validate-steps-${process.pid}-${runs++}.json`);
  // The guard's sentinel before the run: the previous run's after-sentinel when there was one (only
  // this process's bookkeeping ran in between), but never a disturbed attempt's for its re-run (until
  // m15p a slow after-sentinel flagged the re-run too: 4 of the 8 re-runs at 01:37).
  const sentinelBefore = guard ? ((rerun ? undefined : lastSentinelMs) ?? timeSentinel()) : undefined;
  const statBefore = statJiffies();
  const ownBefore = ownJiffies();
  const before = cpuTicks();
  const out = cli(
    [
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
      "--seed",
      String(c.seed ?? 1),
      "--json",
      "--per-request",
    ],
    { ...process.env, LORAMESH_STEP_PROFILE: profile },
  );
  const after = cpuTicks();
  const statAfter = statJiffies();
  const ownAfter = ownJiffies();
  const sentinelAfter = guard ? timeSentinel() : undefined;
  if (!guard) lastSentinelMs = undefined;
  const busyCores =
    before && after ? ((after.busy - before.busy) / Math.max(1, after.total - before.total)) * cpus().length : null;
  const signals = guard
    ? roundSignals(statBefore, statAfter, ownBefore, ownAfter, sentinelBefore, sentinelAfter)
    : undefined;
  let stepProfile: StepShapeSample[] = [];
  let firstStep: StepShapeSample | undefined;
  try {
    const body = JSON.parse(readFileSync(profile, "utf8")) as { steps: StepShapeSample[]; first?: StepShapeSample };
    stepProfile = body.steps;
    firstStep = body.first;
    rmSync(profile, { force: true });
  } catch {
    log(`the worker wrote no step profile for ${c.name}`);
  }
  const { requests, ...figures } = JSON.parse(out) as Measured;
  return {
    ...figures,
    requests: requests ?? [],
    busyCores,
    stepProfile,
    ...(firstStep ? { firstStep } : {}),
    ...(signals ? { signals } : {}),
  };
}

/** The guard's signals over a run, from /proc/stat, this process tree's jiffies and the sentinel. */
function roundSignals(
  statBefore: number[] | undefined,
  statAfter: number[] | undefined,
  ownBefore: number | undefined,
  ownAfter: number | undefined,
  sentinelBefore: number | undefined,
  sentinelAfter: number | undefined,
): RoundSignals {
  const round4 = (x: number): number => Math.round(x * 1e4) / 1e4;
  let stealShare: number | null = null;
  let iowaitShare: number | null = null;
  let foreignCores: number | null = null;
  if (statBefore && statAfter) {
    const d = statAfter.map((x, i) => x - (statBefore[i] ?? 0));
    // guest and guest_nice (columns 9–10) are already in user and nice.
    const total = Math.max(
      1,
      d.slice(0, 8).reduce((a, x) => a + x, 0),
    );
    const steal = d[7] ?? 0;
    stealShare = round4(steal / total);
    iowaitShare = round4((d[4] ?? 0) / total);
    // Busy jiffies: all but idle, iowait and steal; the mesh's are this process tree's.
    const busy = total - (d[3] ?? 0) - (d[4] ?? 0) - steal;
    if (ownBefore !== undefined && ownAfter !== undefined)
      foreignCores = round4(Math.max(0, (busy - (ownAfter - ownBefore)) / total) * cpus().length);
  }
  const baseline = sentinelBaseline(sentinelTimings);
  const sentinelRatio =
    baseline !== null && sentinelBefore !== undefined && sentinelAfter !== undefined
      ? round4(Math.max(sentinelBefore, sentinelAfter) / baseline)
      : null;
  return { stealShare, iowaitShare, foreignCores, sentinelRatio };
}

/** A measured attempt's headline figures: its TTFT P95, mean TPOT and lone decode step (ms). */
function attemptFigures(r: MeasuredRun): { ttftP95Ms: number; tpotMeanMs: number; singleDecodeStepMs: number | null } {
  return { ttftP95Ms: r.ttftMs.p95, tpotMeanMs: r.tpotMs.mean, singleDecodeStepMs: singleDecodeStepMs(r.stepProfile) };
}

/** Every disturbed measurement of this run (`disturbed_rounds` in the report). */
const disturbedRounds: Array<
  ReturnType<typeof disturbedEntries>[number] & { measured?: ReturnType<typeof attemptFigures> }
> = [];

/**
 * One round of a probe or case under the interference guard (m15n): measured again, at most
 * `MAX_RERUNS` times, while its signals say the machine was disturbed; every disturbed attempt is
 * listed in the report, and a round whose re-runs ran out is kept and marked.
 */
function guardedRun(c: Case, seconds: number, round: number): MeasuredRun {
  let attempt = 0;
  const g = guardRound(
    () => {
      const r = runReal(c, seconds, true, attempt++ > 0);
      return { result: r, signals: r.signals as RoundSignals };
    },
    {
      onAttempt: (a) => {
        if (a.reasons.length > 0)
          log(
            `disturbed: ${c.name}, round ${round + 1}, attempt ${a.attempt + 1} (${a.reasons.join(", ")}: ${JSON.stringify(a.signals)})${a.attempt < MAX_RERUNS ? "; measuring it again" : "; kept and marked"}`,
          );
      },
    },
  );
  // Each disturbed attempt's own figures too, so that what a disturbance did to a round can be seen
  // (they are not used: the round kept is the undisturbed re-run, or the last attempt).
  disturbedRounds.push(
    ...disturbedEntries(c.name, round + 1, g).map((e) => {
      const r = g.attempts[e.attempt]?.result;
      return r ? { ...e, measured: attemptFigures(r) } : e;
    }),
  );
  return {
    ...g.result,
    ...(g.attempts.length > 1 ? { attempts: g.attempts.length } : {}),
    ...(g.keptDisturbed ? { keptDisturbed: true } : {}),
  };
}

function predict(
  c: Case,
  cost: CostModel,
  seconds = duration,
  keepTtfts = false,
  pauses?: Array<{ at: number; seconds: number }>,
): Measured {
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
    ...(keepTtfts ? { keepTtfts } : {}),
    // The rebalancing policy's stall (m15t), where one was fitted (`pauses` overrides it).
    ...(pauses
      ? { pauses }
      : rebalanceStall && c.policy === "rank-aware+rebalancing"
        ? { pauses: rebalancePauses(rebalanceStall.endS, rebalanceStall.seconds, REBALANCE_INTERVAL_S, seconds) }
        : {}),
  };
  const r = simulate({ ...workloadAt(c.rate, c.seed), duration: seconds }, cluster, policyByName(c.policy), cost, {
    ttftMs: 1e9,
    tpotMs: 1e9,
  });
  return { ...r, errors: 0 };
}

/**
 * `hybridBusyHopSteps` fitted on the rebalancing probe's rounds (m15w): the value that puts their
 * simulated TTFT P95, each round simulated with its seed and the simulated requests pooled, on the
 * measured rounds' pooled P95 (`hybridBusyHopSteps`, the same solver and bound as on the hybrid
 * probe). Undefined where the run has no such probe or its rounds kept no requests.
 */
function fitPolicyBusyHops(
  k: Calibration,
  rounds: readonly MeasuredRun[] | undefined,
): { steps: number; measuredP95Ms: number; before: number; simulatedP95Ms: number } | undefined {
  if (!rounds || rounds.length === 0 || rounds.some((r) => (r.requests?.length ?? 0) === 0)) return undefined;
  const measured = rounds.flatMap((r) => (r.requests ?? []).map((q) => q.ttftMs)).sort((a, b) => a - b);
  const seeds = rounds.map((r) => r.seed ?? PROBE_SEED);
  const summary = (ttfts: number[]): ProbeSummary => {
    const t = [...ttfts].sort((a, b) => a - b);
    return { ttftP50Ms: percentile(t, 50), ttftP95Ms: percentile(t, 95), tpotMeanMs: 0 };
  };
  const sim = (_probe: ProbeSpec, c: Calibration): ProbeSummary => {
    const cost = new CostModel(c);
    return summary(
      seeds.flatMap((seed) => predict({ ...STALL_PROBE, seed }, cost, STALL_PROBE.seconds, true).ttftsMs ?? []),
    );
  };
  const probe = { mode: STALL_PROBE.mode, rate: STALL_PROBE.rate, ...summary(measured) };
  const steps = hybridBusyHopSteps(probe, k, sim, policyBusyHopCap);
  return {
    steps,
    measuredP95Ms: probe.ttftP95Ms,
    before: k.hybridBusyHopSteps ?? 0,
    simulatedP95Ms: sim(probe, { ...k, hybridBusyHopSteps: steps }).ttftP95Ms,
  };
}

/**
 * The rebalance stall (m15t) from the stall probe's rounds: each round's stall end (`stallEndS`: the
 * first token of its request, arriving from 5 s before the rebalance interval on, that is furthest
 * above the round's median), and the stall length whose simulated excess over the requests before
 * those ends meets the measured one (`fitStallSeconds`; each round simulated with its seed and its
 * own end). The cases' stall ends at the median of the rounds' ends. Rounds without requests (a
 * replay of a run that kept none) give no fit.
 */
function fitRebalanceStall(
  k: Calibration,
  rounds: readonly MeasuredRun[],
):
  | {
      endS: number;
      seconds: number;
      roundEndsS: number[];
      measuredExcessMs: number;
      simulatedExcessMs: number;
      noStallExcessMs: number;
      requests: number;
    }
  | undefined {
  const measured = rounds.flatMap((r) => {
    const q = (r.requests ?? []).filter((x) => x.arrivalS !== undefined);
    const timed = { arrivalsS: q.map((x) => x.arrivalS as number), ttftsMs: q.map((x) => x.ttftMs) };
    const endS = stallEndS(timed, REBALANCE_INTERVAL_S - 5, Infinity);
    return endS === undefined ? [] : [{ ...timed, endS, seed: r.seed ?? PROBE_SEED }];
  });
  if (measured.length === 0) return undefined;
  const cost = new CostModel(k);
  const excessAt = (d: number): number =>
    stallExcessMs(
      measured.map((m) => {
        const r = predict(
          { ...STALL_PROBE, seed: m.seed },
          cost,
          STALL_PROBE.seconds,
          true,
          d > 0 ? [{ at: m.endS - d, seconds: d }] : [],
        );
        return { arrivalsS: r.arrivalsS ?? [], ttftsMs: r.ttftsMs ?? [], endS: m.endS };
      }),
    );
  const measuredExcessMs = stallExcessMs(measured);
  const seconds = fitStallSeconds(measuredExcessMs, excessAt);
  return {
    endS: median(measured.map((m) => m.endS)),
    seconds,
    roundEndsS: measured.map((m) => Math.round(m.endS * 1e4) / 1e4),
    measuredExcessMs,
    simulatedExcessMs: excessAt(seconds),
    noStallExcessMs: excessAt(0),
    requests: measured.reduce((a, m) => a + m.arrivalsS.length, 0),
  };
}

/**
 * Each probe round's machine state (`--round-states`, m15s): its steps' measured periods over the
 * fit's price of them, and the hop (or tail) scale that puts the round's own simulated TTFT at
 * `--round-state-quantile` on its measured one (with its step scale applied; 1 where the round kept
 * no requests). Every probe of a mode contributes its rounds, the step-only ones too.
 */
function probeRoundStates(
  k: Calibration,
): Array<RoundState & { mode: ServingMode; probe: string; round: number; seed: number }> {
  const fit = k.stepPeriods as StepPeriodFit;
  const useSteps = roundStatesFlag.startsWith("steps");
  const hopKind = roundStatesFlag.endsWith("hops") ? "hops" : roundStatesFlag.endsWith("tail") ? "tail" : undefined;
  const entries: Array<[Case & { seconds: number }, MeasuredRun[]]> = [
    ...PROBE_ORDER.map((key): [Case & { seconds: number }, MeasuredRun[]] => [PROBES[key], probeRounds[key]]),
    ...STEP_PROBE_ORDER.flatMap((key): Array<[Case & { seconds: number }, MeasuredRun[]]> => {
      const r = stepProbeRounds[key];
      return r && r.length > 0 ? [[STEP_PROBES[key], r]] : [];
    }),
  ];
  return entries.flatMap(([spec, runs]) =>
    runs.map((r, i) => {
      const seed = r.seed ?? PROBE_SEED;
      const base: RoundState = {
        stepScale: useSteps ? roundStepScale(r.stepProfile, fit, spec.mode, busyFractionOf(r)) : 1,
        hopScale: 1,
        hopTailScale: 1,
      };
      const ttfts = (r.requests ?? []).map((q) => q.ttftMs);
      const at = (x: number): RoundState =>
        hopKind === "tail" ? { ...base, hopTailScale: x } : { ...base, hopScale: x };
      const scale =
        hopKind && ttfts.length > 0
          ? fitRoundScale(
              ttfts,
              roundStateQuantile,
              (x) =>
                predict({ ...spec, seed }, new CostModel(withRoundState(k, at(x))), spec.seconds, true).ttftsMs ?? [],
            )
          : 1;
      return { mode: spec.mode, probe: spec.name, round: i + 1, seed, ...at(scale) };
    }),
  );
}

/** A round's guard signals and re-runs, for the report (absent in a replay). */
const guardFields = (r: MeasuredRun): Record<string, unknown> => ({
  ...(r.signals ? { signals: r.signals } : {}),
  ...(r.attempts ? { attempts: r.attempts } : {}),
  ...(r.keptDisturbed ? { keptDisturbed: true } : {}),
});

/** One measured round as a probe's report lists it. */
const roundReport = (r: MeasuredRun): Record<string, unknown> => ({
  ttftMs: r.ttftMs,
  tpotMs: r.tpotMs,
  busyCores: r.busyCores,
  ...guardFields(r),
});

const errorPct = (predicted: number, measured: number): number =>
  measured === 0 ? (predicted === 0 ? 0 : 100) : (100 * Math.abs(predicted - measured)) / measured;

/** A run measured here, or an earlier one read back (`--replay`). */
interface Runs {
  kernels: { calibration: Calibration; file: string };
  load: { start: number; end?: number };
  warmUp: unknown;
  probeRounds: Record<keyof StackProbes, MeasuredRun[]>;
  /** The step-only probes' rounds (absent: not run, or a stored run from before m15q). */
  stepProbeRounds: Partial<Record<StepProbeKey, MeasuredRun[]>>;
  /** The rebalance stall probe's rounds (absent: not run, or a stored run from before m15t). */
  stallProbeRounds?: MeasuredRun[];
  caseRounds: MeasuredRun[][];
}

const PROBE_ORDER: Array<keyof StackProbes> = ["coupledLow", "coupledHigh", "disaggregated", "hybrid"];

function measure(): Runs {
  const load = { start: loadavg()[0] as number };
  // The sentinel's first timings, before anything else runs: the start of its baseline.
  for (let k = 0; k < 5; k++) timeSentinel();
  lastSentinelMs = undefined;
  const kernels = calibration();
  // A warm-up pass first, discarded: one short run of each mode (each starts its own processes: the
  // LoRA server's and a hybrid worker's code paths, the adapters' files, and the VM's vCPUs get warm).
  // In the idle run of 2026-12-02 the first run after `loramesh calibrate` stepped slower than every
  // later coupled run; in the runs of 17:15 and 17:55 the first round was the slowest of three in
  // most probes and cases, in every mode (lone decode steps 1.17–3.01 ms against 1.00–2.61 in the
  // later rounds at 17:15; TPOT of every case's first round the highest at 17:55), and a case pools
  // its rounds' requests, so a slow first round sets its TTFT P95 (docs/evaluation.md §5).
  const WARM_UP_MODES: ServingMode[] = ["coupled", "disaggregated", "hybrid"];
  const warmUpStart = Date.now();
  for (const mode of WARM_UP_MODES)
    runReal({ name: `warm-up, ${mode} (discarded)`, mode, policy: "rank-aware", rate: 4, seed: 3 }, quick ? 4 : 8);
  const warmUp = {
    modes: WARM_UP_MODES,
    seconds: (Date.now() - warmUpStart) / 1000,
    loadAverage1mAfter: loadavg()[0] as number,
  };
  log(`warm-up pass: ${warmUp.seconds.toFixed(0)} s, load average ${warmUp.loadAverage1mAfter.toFixed(2)} after it`);
  // Probes and cases alternate (each probe next to the case of its mode), so the machine's drift over
  // the run (in the idle run of 2026-12-02 every case stepped faster than every probe: same-shape
  // steps 0.72–0.89 ms against 0.97–1.03) falls on both sides of the fit instead of between them.
  const probeRounds = Object.fromEntries(PROBE_ORDER.map((k) => [k, [] as MeasuredRun[]])) as Record<
    keyof StackProbes,
    MeasuredRun[]
  >;
  const caseRounds: MeasuredRun[][] = CASES.map(() => []);
  const stepProbeRounds: Partial<Record<StepProbeKey, MeasuredRun[]>> = {};
  const stallProbeRounds: MeasuredRun[] = [];
  for (let round = 0; round < rounds; round++) {
    if (rounds > 1) log(`round ${round + 1} of ${rounds}`);
    CASES.forEach((c, i) => {
      const key = PROBE_ORDER[i] as keyof StackProbes;
      const probe = PROBES[key];
      probeRounds[key].push({
        ...guardedRun({ ...probe, seed: probeSeed(round) }, probe.seconds, round),
        seed: probeSeed(round),
      });
      caseRounds[i]?.push(guardedRun(c, duration, round));
      for (const k of STEP_PROBE_ORDER.filter((key) => STEP_PROBE_AFTER_CASE[key] === i)) {
        const probe = STEP_PROBES[k];
        (stepProbeRounds[k] ??= []).push({
          ...guardedRun({ ...probe, seed: probeSeed(round) }, probe.seconds, round),
          seed: probeSeed(round),
        });
      }
      if (runStallProbe && i === STALL_PROBE_AFTER_CASE)
        stallProbeRounds.push({
          ...guardedRun({ ...STALL_PROBE, seed: probeSeed(round) }, STALL_PROBE.seconds, round),
          seed: probeSeed(round),
        });
    });
  }
  return {
    kernels,
    load,
    warmUp,
    probeRounds,
    stepProbeRounds,
    ...(runStallProbe ? { stallProbeRounds } : {}),
    caseRounds,
  };
}

/** The stored report and step profiles of an earlier run, as the rounds `measure` returns. */
function replayRuns(reportFile: string): Runs {
  const stepsFile =
    flag("--replay-steps") ?? reportFile.replace(/validate-simulator([^/]*)\.json$/, "validate-steps$1.json");
  log(`replaying ${reportFile} with ${stepsFile} (nothing is measured)`);
  interface StoredRound {
    ttftP95Ms?: number;
    tpotMeanMs?: number;
    ttftMs?: { p50: number; p95: number };
    tpotMs?: { mean: number };
    throughputTokensPerSecond?: number;
    busyCores: number | null;
    seed?: number;
  }
  interface StoredEntry {
    case: string;
    seed?: number;
    seeds?: number[];
    measured: {
      ttftMs?: { p50: number; p95: number };
      tpotMs?: { mean: number };
      ttftP95Ms?: number;
      tpotMeanMs?: number;
      throughputTokensPerSecond: number;
      completed: number;
      errors: number;
      rounds?: StoredRound[];
    };
    measuredRounds?: StoredRound[];
    steps: { busyFractionByRound?: Array<number | null> };
  }
  const report = JSON.parse(readFileSync(reportFile, "utf8")) as {
    machine: { loadAverage1m: { start: number; end: number }; warmUp?: unknown };
    calibration: { kernel?: Partial<Calibration> };
    probes: StoredEntry[];
    cases: StoredEntry[];
  };
  const steps = JSON.parse(readFileSync(stepsFile, "utf8")) as {
    probes: Array<{
      case: string;
      rounds: StepShapeSample[][];
      firstSteps?: Array<StepShapeSample | null>;
      requestTtftsMs?: number[][];
      requestArrivalsS?: Array<Array<number | null>>;
    }>;
    cases: Array<{ case: string; rounds: StepShapeSample[][]; firstSteps?: Array<StepShapeSample | null> }>;
  };
  // A round as `runReal` returns it; its length is set so that `busyFractionOf` gives the stored
  // busy fraction (the report keeps the fraction, not the length).
  const round = (
    profile: StepShapeSample[],
    first: StepShapeSample | null | undefined,
    busy: number | null | undefined,
    figures: Measured,
    busyCores: number | null,
  ): MeasuredRun => {
    const sumS = profile.reduce((a, s) => a + s.sumUs, 0) / 1e6;
    return {
      ...figures,
      ...(busy ? { durationS: sumS / busy } : {}),
      busyCores,
      stepProfile: profile,
      ...(first ? { firstStep: first } : {}),
    };
  };
  // A stored probe's rounds, or undefined when the run did not have it.
  const storedProbe = (name: string): MeasuredRun[] | undefined => {
    const entry = report.probes.find((p) => p.case === name);
    const stored = steps.probes.find((p) => p.case === name);
    if (!entry || !stored) return undefined;
    // A probe's figures are the median of its rounds; each round carries the median figures here,
    // so the median of the rounds is the stored one (the rounds' own are in `measured.rounds`).
    const m = entry.measured;
    const figures: Measured = {
      ttftMs: m.ttftMs as { p50: number; p95: number },
      tpotMs: m.tpotMs as { mean: number },
      throughputTokensPerSecond: m.throughputTokensPerSecond,
      errors: 0,
      completed: m.completed,
    };
    return stored.rounds.map((profile, i) => ({
      ...round(
        profile,
        stored.firstSteps?.[i],
        entry.steps.busyFractionByRound?.[i],
        figures,
        m.rounds?.[i]?.busyCores ?? null,
      ),
      seed: entry.seeds?.[i] ?? entry.seed ?? 2,
      // The round's requests, where the run kept them (since m15l; only their TTFTs matter).
      // Their arrivals too where kept (since m15p; the stall's fit reads them, m15t).
      ...(stored.requestTtftsMs?.[i]?.length
        ? {
            requests: stored.requestTtftsMs[i].map((ttftMs, j) => {
              const arrivalS = stored.requestArrivalsS?.[i]?.[j];
              return typeof arrivalS === "number" ? { ttftMs, tpotMs: 0, arrivalS } : { ttftMs, tpotMs: 0 };
            }),
          }
        : {}),
    }));
  };
  const probeRounds = Object.fromEntries(
    PROBE_ORDER.map((k) => {
      const rounds = storedProbe(PROBES[k].name);
      if (!rounds) throw new Error(`${reportFile}: no probe ${JSON.stringify(PROBES[k].name)}`);
      return [k, rounds];
    }),
  ) as Record<keyof StackProbes, MeasuredRun[]>;
  // Runs stored before m15q have no step-only probes: their replay fits the model as it was.
  const stepProbeRounds: Partial<Record<StepProbeKey, MeasuredRun[]>> = {};
  for (const k of STEP_PROBE_ORDER) {
    const rounds = storedProbe(STEP_PROBES[k].name);
    if (rounds) stepProbeRounds[k] = rounds;
  }
  // Runs stored before m15t have no stall probe: no stall is fitted (the model as it was).
  const stallProbeRounds = runStallProbe ? storedProbe(STALL_PROBE.name) : undefined;
  const caseRounds = CASES.map((c) => {
    const entry = report.cases.find((e) => e.case === c.name);
    const stored = steps.cases.find((e) => e.case === c.name);
    if (!entry || !stored) throw new Error(`${reportFile}: no case ${JSON.stringify(c.name)}`);
    // The pooled figures are stored, not the requests: every round carries them (so pooling, a
    // median or a mean of the rounds gives them back); `measuredRounds` keeps each round's own.
    const m = entry.measured;
    const p95 = m.ttftP95Ms as number;
    const figures: Measured = {
      ttftMs: { p50: p95, p95 },
      tpotMs: { mean: m.tpotMeanMs as number },
      throughputTokensPerSecond: m.throughputTokensPerSecond,
      errors: 0,
      completed: m.completed,
      requests: [{ ttftMs: p95, tpotMs: m.tpotMeanMs as number }],
    };
    return stored.rounds.map((profile, i) =>
      round(
        profile,
        stored.firstSteps?.[i],
        entry.steps.busyFractionByRound?.[i],
        figures,
        entry.measuredRounds?.[i]?.busyCores ?? null,
      ),
    );
  });
  return {
    kernels:
      report.calibration.kernel && flag("--calibration") === undefined
        ? // The run's own kernel calibration (kept since m15k; before, the stored file's is used).
          { calibration: { ...DEFAULT_CALIBRATION, ...report.calibration.kernel }, file: `${reportFile} (kernel)` }
        : calibration(),
    load: report.machine.loadAverage1m,
    warmUp: report.machine.warmUp ?? null,
    probeRounds,
    stepProbeRounds,
    ...(stallProbeRounds ? { stallProbeRounds } : {}),
    caseRounds,
  };
}

const { kernels, load, warmUp, probeRounds, stepProbeRounds, stallProbeRounds, caseRounds } = replayFile
  ? replayRuns(replayFile)
  : measure();
const file = kernels.file;
const probeRuns = Object.fromEntries(PROBE_ORDER.map((k) => [k, ofRounds(probeRounds[k], false)])) as Record<
  keyof StackProbes,
  RoundsRun
>;
const stepProbeRuns: Partial<Record<StepProbeKey, RoundsRun>> = Object.fromEntries(
  STEP_PROBE_ORDER.flatMap((k) => {
    const r = stepProbeRounds[k];
    return r && r.length > 0 ? [[k, ofRounds(r, false)]] : [];
  }),
);
const caseRuns = caseRounds.map((r) => ofRounds(r));
// A request's arrival in the steps file (null in a replay, whose steps file kept none). At full
// precision since m15w, as the TTFTs: runs before it kept 0.1 ms (arrivals) and 0.01 ms (TTFTs).
const arrivalOf = (q: { arrivalS?: number }): number | null => (q.arrivalS === undefined ? null : q.arrivalS);
let { calibration: cal, probes } = probeOverheads(kernels.calibration, probeRuns, stepProbeRuns);
// `--round-states` (m15s): each probe round's machine state relative to the fit, then the fit again
// with each probe round simulated in its state (`--round-state-refits`, default 1), the states
// again relative to that fit. Without the refit the hops' tail, fitted on the probes' rounds
// pooled, holds the spread between rounds that the states add once more.
let states: ReturnType<typeof probeRoundStates> | undefined;
if (roundStatesFlag !== "off") {
  states = probeRoundStates(cal);
  for (let i = 0; i < roundStateRefits; i++) {
    probeStateOf.clear();
    for (const key of PROBE_ORDER) {
      const m = new Map<number, RoundState>();
      // By seed, as the probes' simulations are (each round its own seed since m15g; a run with one
      // seed in every round would simulate its rounds once, in the last round's state).
      for (const st of states.filter((x) => x.probe === PROBES[key].name)) m.set(st.seed, st);
      probeStateOf.set(key, m);
    }
    ({ calibration: cal, probes } = probeOverheads(kernels.calibration, probeRuns, stepProbeRuns));
    states = probeRoundStates(cal);
  }
}
// The rebalance stall (m15t), fitted on its probe with the model as fitted above.
const stallFit = stallProbeRounds && stallProbeRounds.length > 0 ? fitRebalanceStall(cal, stallProbeRounds) : undefined;
if (stallFit && useStall) rebalanceStall = { endS: stallFit.endS, seconds: stallFit.seconds };
// The hybrid busy-hop term refitted on the rebalancing probe (`--busy-hop-probe policy`, m15w), after
// the stall (the probe's simulation carries it where it is used), within the same bound.
const policyBusyHops = busyHopProbeFlag === "policy" ? fitPolicyBusyHops(cal, stallProbeRounds) : undefined;
if (policyBusyHops) cal = { ...cal, hybridBusyHopSteps: policyBusyHops.steps };
if (policyBusyHops)
  log(
    `busy hops on the rebalancing probe: ${policyBusyHops.steps.toFixed(3)} steps (hybrid probe's ${policyBusyHops.before.toFixed(3)}); its pooled TTFT P95 ${policyBusyHops.measuredP95Ms.toFixed(1)} ms measured, ${policyBusyHops.simulatedP95Ms.toFixed(1)} simulated`,
  );
if (stallFit)
  log(
    `rebalance stall: ${(stallFit.seconds * 1000).toFixed(0)} ms ending at ${stallFit.endS.toFixed(2)} s (rounds ${stallFit.roundEndsS.join(", ")}); excess ${stallFit.measuredExcessMs.toFixed(1)} ms measured, ${stallFit.simulatedExcessMs.toFixed(1)} simulated (${stallFit.noStallExcessMs.toFixed(1)} without)${useStall ? "" : "; not used (--rebalance-stall prices it)"}`,
  );
writeFileSync(
  join(replaying ? tmpdir() : RESULTS, "validate-steps.json"),
  `${JSON.stringify({
    rounds,
    probes: [
      ...PROBE_ORDER.map((k) => ({
        case: PROBES[k].name,
        mode: PROBES[k].mode,
        seeds: probeRounds[k].map((r) => r.seed ?? PROBE_SEED),
        rounds: probeRounds[k].map((r) => r.stepProfile),
        firstSteps: probeRounds[k].map((r) => r.firstStep ?? null),
        // Each round's requests' TTFTs (ms; 0.01 ms before m15w), so that a replay fits the hops as the run did
        // (on the requests pooled; since m15l).
        requestTtftsMs: probeRounds[k].map((r) => (r.requests ?? []).map((q) => q.ttftMs)),
        // Their arrivals (s from the run's start, in the same order; since m15p), so a later model can
        // fit each request's wake-up (its idle gap) on the run's own probes.
        requestArrivalsS: probeRounds[k].map((r) => (r.requests ?? []).map(arrivalOf)),
      })),
      // The step-only probes (m15q) follow, in the same form.
      ...STEP_PROBE_ORDER.flatMap((k) => {
        const r = stepProbeRounds[k];
        if (!r || r.length === 0) return [];
        return [
          {
            case: STEP_PROBES[k].name,
            mode: STEP_PROBES[k].mode,
            stepsOnly: true,
            seeds: r.map((x) => x.seed ?? PROBE_SEED),
            rounds: r.map((x) => x.stepProfile),
            firstSteps: r.map((x) => x.firstStep ?? null),
            requestTtftsMs: r.map((x) => (x.requests ?? []).map((q) => q.ttftMs)),
            requestArrivalsS: r.map((x) => (x.requests ?? []).map(arrivalOf)),
          },
        ];
      }),
      // The rebalance stall's probe (m15t), in the same form.
      ...(stallProbeRounds && stallProbeRounds.length > 0
        ? [
            {
              case: STALL_PROBE.name,
              mode: STALL_PROBE.mode,
              stallOnly: true,
              seeds: stallProbeRounds.map((x) => x.seed ?? PROBE_SEED),
              rounds: stallProbeRounds.map((x) => x.stepProfile),
              firstSteps: stallProbeRounds.map((x) => x.firstStep ?? null),
              requestTtftsMs: stallProbeRounds.map((x) => (x.requests ?? []).map((q) => q.ttftMs)),
              requestArrivalsS: stallProbeRounds.map((x) => (x.requests ?? []).map(arrivalOf)),
            },
          ]
        : []),
    ],
    cases: CASES.map((c, i) => ({
      case: c.name,
      mode: c.mode,
      rounds: caseRounds[i]?.map((r) => r.stepProfile),
      firstSteps: caseRounds[i]?.map((r) => r.firstStep ?? null),
      // The case rounds' request TTFTs too (since m15m; for analysis, a replay does not read them).
      requestTtftsMs: caseRounds[i]?.map((r) => (r.requests ?? []).map((q) => q.ttftMs)),
      requestArrivalsS: caseRounds[i]?.map((r) => (r.requests ?? []).map(arrivalOf)),
    })),
  })}\n`,
);
const cost = new CostModel(cal);
// The stall probe's entry in the report: its figures next to the model's (with the stall if used).
const stallProbeEntry = (() => {
  if (!stallProbeRounds || stallProbeRounds.length === 0) return undefined;
  const run = ofRounds(stallProbeRounds, false);
  const seeds = run.rounds.map((r) => r.seed ?? PROBE_SEED);
  const pooled = ofRounds(stallProbeRounds);
  const simulated = seeds.map((seed) => predict({ ...STALL_PROBE, seed }, cost, STALL_PROBE.seconds, true));
  const simTtfts = simulated.flatMap((r) => r.ttftsMs ?? []).sort((a, b) => a - b);
  return {
    case: STALL_PROBE.name,
    seed: seeds[0],
    seeds,
    // Fitted into the rebalance stall only; its other figures are reported, not fitted to.
    stallOnly: true,
    hopsFittedOn: false,
    measured: {
      ttftMs: run.ttftMs,
      pooledTtftMs: { p50: pooled.ttftMs.p50, p95: pooled.ttftMs.p95, requests: pooled.requests?.length ?? 0 },
      tpotMs: run.tpotMs,
      throughputTokensPerSecond: run.throughputTokensPerSecond,
      completed: run.completed,
      errors: run.errors,
      busyCores: run.busyCores,
      rounds: run.rounds.map(roundReport),
    },
    steps: stepSummary(run.rounds, cal.stepPeriods as StepPeriodFit, STALL_PROBE.mode),
    fitted: {
      pooledTtftMs: { p50: percentile(simTtfts, 50), p95: percentile(simTtfts, 95) },
      tpotMeanMs: median(simulated.map((r) => r.tpotMs.mean)),
    },
    rebalanceStall: stallFit ?? null,
  };
})();
const cases = CASES.map((c, i) => {
  const measured = caseRuns[i] as RoundsRun;
  const caseStates = states?.filter((x) => roundStatePool === "all" || x.mode === c.mode);
  const predicted =
    caseStates && caseStates.length > 0
      ? {
          ...pooledOverStates(caseStates, (st) => {
            const r = predict(c, new CostModel(withRoundState(cal, st)), duration, true);
            return {
              ttftsMs: r.ttftsMs ?? [],
              tpotMeanMs: r.tpotMs.mean,
              completed: r.completed,
              throughputTokensPerSecond: r.throughputTokensPerSecond,
            };
          }),
          errors: 0,
        }
      : predict(c, cost);
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
    // Each round's figures and how far they moved: the measurement's own noise.
    measuredRounds: measured.rounds.map((r) => ({
      ttftP95Ms: r.ttftMs.p95,
      tpotMeanMs: r.tpotMs.mean,
      throughputTokensPerSecond: r.throughputTokensPerSecond,
      busyCores: r.busyCores,
      ...guardFields(r),
    })),
    spreadPct: {
      ttftP95: spreadPct(measured.rounds, (r) => r.ttftMs.p95),
      tpotMean: spreadPct(measured.rounds, (r) => r.tpotMs.mean),
      throughput: spreadPct(measured.rounds, (r) => r.throughputTokensPerSecond),
    },
    predicted: {
      ttftP95Ms: predicted.ttftMs.p95,
      tpotMeanMs: predicted.tpotMs.mean,
      throughputTokensPerSecond: predicted.throughputTokensPerSecond,
      completed: predicted.completed,
    },
    errorPct: error,
    // The machine states the prediction pooled (`--round-states`, m15s): one simulated round each.
    ...(caseStates ? { roundStates: caseStates } : {}),
    steps: stepSummary(measured.rounds, cal.stepPeriods as StepPeriodFit, c.mode),
    busyCoresDuringRun: measured.busyCores,
  };
});
const maxError = Math.max(...cases.flatMap((c) => Object.values(c.errorPct)));
const loadEnd: number = load.end ?? loadavg()[0] ?? 0;
// Other work on the machine (a load average above the core count) slows the real mesh by amounts
// that change between a probe and a case; say so next to the numbers.
const loaded = Math.max(load.start, loadEnd) > cpus().length;
const report = {
  machine: {
    cores: cpus().length,
    loadAverage1m: { start: load.start, end: loadEnd },
    warmUp,
    ...(loaded ? { warning: "loaded by other work: the errors include its drift between probes and cases" } : {}),
  },
  calibration: {
    file,
    machine: cal.machine,
    measuredAt: cal.measuredAt,
    // This run's `loramesh calibrate` figures, so that a replay prices the LoRA kernel as the run
    // did (before m15k a replay read whichever calibration file was in bench/results).
    kernel: Object.fromEntries(Object.entries(kernels.calibration).filter(([k]) => k !== "samples")),
    overheadsFromProbes: {
      stepPeriods: cal.stepPeriods,
      streamEndUs: cal.streamEndUs,
      requestOverheadUs: cal.requestOverheadUs,
      requestOverheadP95Us: cal.requestOverheadP95Us,
      remoteRequestOverheadUs: cal.remoteRequestOverheadUs,
      remoteRequestOverheadP95Us: cal.remoteRequestOverheadP95Us,
      requestOverheadPerIdleUs: cal.requestOverheadPerIdleUs,
      requestOverheadIdleRef: cal.requestOverheadIdleRef,
      requestOverheadIdleRange: cal.requestOverheadIdleRange,
      requestOverheadWakeTauS: cal.requestOverheadWakeTauS,
      hybridBusyHopSteps: cal.hybridBusyHopSteps,
      // m15t: the rebalancing policy's stall, as fitted on its probe, and whether the cases used it.
      ...(stallFit ? { rebalanceStall: { ...stallFit, intervalS: REBALANCE_INTERVAL_S, used: useStall } } : {}),
      // The busy-hop term as refitted on the rebalancing probe (m15w; `before`: the hybrid probe's).
      busyHopProbe: busyHopProbeFlag,
      policyBusyHopCap,
      ...(policyBusyHops ? { policyBusyHops } : {}),
    },
  },
  quick,
  rounds,
  // The step's idle term (m15u): its regressor and the borrowing modes on the linear slope.
  idleTerm: { scale: idleScaleFlag, lendLinear: idleScaleFlag === "linear" ? null : (lendLinearModes ?? null) },
  ...(states
    ? {
        roundStates: {
          kind: roundStatesFlag,
          quantile: roundStateQuantile,
          refits: roundStateRefits,
          pool: roundStatePool,
        },
      }
    : {}),
  ...(replaying ? { replayOf: replayFile } : {}),
  // The interference guard (m15n): a measured round whose machine was disturbed, by signals
  // independent of the prediction, was measured again; every disturbed attempt is listed. A replay
  // measures nothing and has no guard.
  ...(replaying
    ? {}
    : {
        interferenceGuard: {
          thresholds: GUARD_THRESHOLDS,
          maxReruns: MAX_RERUNS,
          sentinel: {
            baselineMs: sentinelBaseline(sentinelTimings),
            timings: sentinelTimings.length,
            minMs: Math.min(...sentinelTimings),
            maxMs: Math.max(...sentinelTimings),
            // Since m15p: a slow timing is timed again (at most this many times) and the lower counts,
            // and every timing is kept, in order (for the threshold's analysis).
            retimes: SENTINEL_RETIMES,
            timingsMs: sentinelTimings.map((ms) => Math.round(ms * 100) / 100),
          },
        },
        disturbed_rounds: disturbedRounds,
      }),
  probes: stallProbeEntry ? [...probes, stallProbeEntry] : probes,
  cases,
  max_error_pct: maxError,
  target_pct: 20,
};
if (json) process.stdout.write(`${JSON.stringify(report)}\n`);
else {
  const f = (v: number, d = 1): string => v.toFixed(d);
  process.stdout.write(
    [
      `calibration: ${cal.machine} (${file}); ${cpus().length} cores, load average ${f(load.start, 2)} → ${f(loadEnd, 2)}`,
      "| case | busy cores | TTFT P95 measured / predicted (ms) | mean TPOT measured / predicted (ms) | throughput measured / predicted (tok/s) | max error |",
      "|---|---|---|---|---|---|",
      ...cases.map(
        (c) =>
          `| ${c.case} | ${c.busyCoresDuringRun === null ? "?" : f(c.busyCoresDuringRun, 2)} | ${f(c.measured.ttftP95Ms)} / ${f(c.predicted.ttftP95Ms)} | ${f(c.measured.tpotMeanMs, 2)} / ${f(c.predicted.tpotMeanMs, 2)} | ${f(c.measured.throughputTokensPerSecond)} / ${f(c.predicted.throughputTokensPerSecond)} | ${f(Math.max(...Object.values(c.errorPct)))} % |`,
      ),
      `max_error_pct ${f(maxError)} (target ≤ 20)${loaded ? "; the machine was loaded by other work (load average above its cores)" : ""}`,
      "",
    ].join("\n"),
  );
}
