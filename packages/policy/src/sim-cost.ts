/**
 * The one interface the simulator prices work with, over either cost model: the linear CPU model
 * calibrated by `loramesh calibrate` (the real mesh on this machine) or the derived GPU roofline.
 */
import type { CostModel, RankMode } from "./cost-model";
import type { GpuCostModel, Link, StepShape } from "./gpu-cost-model";

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
  /** Seconds from a client's send to the request reaching an executor and back (stack overhead). */
  readonly requestOverheadSeconds: number;
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
    requestOverheadSeconds: (c.requestOverheadUs ?? 0) / 1e6,
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
    requestOverheadSeconds: 0,
  };
}

export function toSimCost(cost: CostModel | GpuCostModel): SimCost {
  return "kind" in cost && cost.kind === "gpu" ? gpuSimCost(cost) : cpuSimCost(cost as CostModel);
}
