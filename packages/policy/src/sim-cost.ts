/**
 * The one interface the simulator prices work with, over either cost model: the linear CPU model
 * calibrated by `loramesh calibrate` (the real mesh on this machine) or the derived GPU roofline.
 */
import type { Calibration, CostModel, RankMode } from "./cost-model";
import type { GpuCostModel, Link, StepShape } from "./gpu-cost-model";
import type { ServingMode } from "./simulator";
import { firstStepExtraUs, stepPeriodUs, type StepPeriodShape } from "./step-fit";

export interface SimCost {
  readonly kind: "cpu" | "gpu";
  /** Layers a layer-wise load is split into. */
  readonly layers: number;
  baseStepUs(step: StepShape): number;
  /** LoRA of a step, on the executor or on a LoRA-server lane of `gpus` GPUs. */
  loraStepUs(step: StepShape, kernel: RankMode, gpus?: number): number;
  /** The activations' round trips of one step to a LoRA server. */
  remoteUs(tokens: number, link: Link, push: boolean): number;
  loadSeconds(bytes: number): number;
  /** Per sequence emitting a token in a step: streaming it to the client. */
  readonly tokenStreamUs: number;
  /** Per step of an executor in hybrid mode (its LoRA sites go through callbacks). */
  readonly hybridStepUs: number;
  /**
   * Seconds from a client's send to the request reaching an executor and back (stack overhead),
   * for a standard normal draw `z` (log-normal: a long tail of slow hops), on a machine whose
   * executors are `busyFraction` busy when it is sent (absent: the hops' reference).
   */
  requestOverheadSeconds(mode: "coupled" | "disaggregated" | "hybrid", z: number, busyFraction?: number): number;
  /** The hops' cost depends on how busy the machine is (`requestOverheadPerIdleUs`). */
  readonly hopsByBusy: boolean;
  /**
   * With `hopsByBusy`: > 0, the busy fraction a hop reads is its request's own activity,
   * exp(−gap / τ) for the idle gap before its send (`requestOverheadWakeTauS`); 0, the executors'
   * smoothed busy fraction.
   */
  readonly hopWakeTauS: number;
  /**
   * A step's whole period measured on the real engine (LoRA, round trips and streaming included),
   * or undefined: price it from its parts.
   */
  stepPeriodUs(mode: ServingMode, shape: StepPeriodShape): number | undefined;
  /** What an executor's first measured step costs beyond its period (its one-off costs). */
  firstStepUs(mode: ServingMode): number;
  /** Periods of the step in flight a request reaching a stepping executor waits before it queues. */
  busyHopSteps(mode: ServingMode): number;
  /** From a request's last token leaving the executor to its stream's end at the client. */
  readonly streamEndSeconds: number;
}

/** A log-normal quantity from its median and P95 (σ = ln(P95 / median) / 1.645). */
export function logNormalAt(medianUs: number, p95Us: number | undefined, z: number): number {
  if (medianUs <= 0) return 0;
  const sigma = p95Us !== undefined && p95Us > medianUs ? Math.log(p95Us / medianUs) / 1.6449 : 0;
  return medianUs * Math.exp(sigma * z);
}

/**
 * What a hop costs beyond the log-normal's draw at the machine's busy fraction: the busy term's
 * slope times the idle fraction's distance from the reference, the idle fraction clamped to the
 * span it was fitted over (a linear fit on the coupled probes' 2 and 12 req/s says nothing of a
 * machine 0.4 busy, the hybrid case's; absent: the reference, 0).
 */
export function hopIdleUs(c: Calibration, busyFraction: number | undefined): number {
  const slope = c.requestOverheadPerIdleUs ?? 0;
  if (slope === 0 || busyFraction === undefined) return 0;
  const ref = c.requestOverheadIdleRef ?? 0;
  const [lo, hi] = c.requestOverheadIdleRange ?? [0, 1];
  const idle = Math.min(hi, Math.max(lo, 1 - busyFraction));
  return slope * (idle - ref);
}

/** The calibrated CPU model: LoRA servers are reached over shared memory, as on one host. */
export function cpuSimCost(cost: CostModel): SimCost {
  const c = cost.calibration;
  return {
    kind: "cpu",
    layers: Math.max(1, Math.round(cost.calibration.sitesPerStep / 4)),
    baseStepUs: (step) => (step.tokens === 0 ? 0 : cost.baseStepUs(step.tokens) + (c.stepOverheadUs ?? 0)),
    loraStepUs: (step, kernel) => cost.loraStepUs(step, kernel),
    remoteUs: (tokens) =>
      cost.transportStepUs(tokens, "shm") + Math.max(0, (c.remoteStepOverheadUs ?? 0) - (c.stepOverheadUs ?? 0)),
    loadSeconds: (bytes) => cost.loadSeconds(bytes),
    tokenStreamUs: c.tokenStreamUs ?? 0,
    hybridStepUs: c.hybridStepOverheadUs ?? 0,
    requestOverheadSeconds: (mode, z, busyFraction) => {
      const remote = mode === "disaggregated" && c.remoteRequestOverheadUs !== undefined;
      const median = (remote ? c.remoteRequestOverheadUs : c.requestOverheadUs) ?? 0;
      // A round's machine state (m15s): its hops' draw scaled, its tail widened or narrowed.
      const hop =
        (c.roundHopScale ?? 1) *
        logNormalAt(
          median,
          remote ? c.remoteRequestOverheadP95Us : c.requestOverheadP95Us,
          z * (c.roundHopTailScale ?? 1),
        );
      return Math.max(0, hop + hopIdleUs(c, busyFraction)) / 1e6;
    },
    hopsByBusy: (c.requestOverheadPerIdleUs ?? 0) !== 0,
    hopWakeTauS: c.requestOverheadWakeTauS ?? 0,
    stepPeriodUs: (mode, shape) => {
      const period = c.stepPeriods ? stepPeriodUs(c.stepPeriods, mode, shape) : undefined;
      return period === undefined ? undefined : period * (c.roundStepScale ?? 1);
    },
    firstStepUs: (mode) => (c.stepPeriods ? firstStepExtraUs(c.stepPeriods, mode) : 0),
    busyHopSteps: (mode) => (mode === "hybrid" ? (c.hybridBusyHopSteps ?? 0) : 0),
    streamEndSeconds: (c.streamEndUs ?? 0) / 1e6,
  };
}

export function gpuSimCost(cost: GpuCostModel): SimCost {
  return {
    kind: "gpu",
    layers: cost.layers,
    baseStepUs: (step) => cost.baseStepUs(step),
    loraStepUs: (step, kernel, gpus) => cost.loraStepUs(step, kernel, gpus),
    remoteUs: (tokens, link, push) => cost.remoteUs(tokens, link, push),
    loadSeconds: (bytes) => cost.loadSeconds(bytes),
    tokenStreamUs: 0,
    hybridStepUs: 0,
    requestOverheadSeconds: () => 0,
    hopsByBusy: false,
    hopWakeTauS: 0,
    stepPeriodUs: () => undefined,
    firstStepUs: () => 0,
    busyHopSteps: () => 0,
    streamEndSeconds: 0,
  };
}

export function toSimCost(cost: CostModel | GpuCostModel): SimCost {
  return "kind" in cost && cost.kind === "gpu" ? gpuSimCost(cost) : cpuSimCost(cost as CostModel);
}
