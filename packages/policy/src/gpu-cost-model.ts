/**
 * A GPU cost model derived (not measured end to end) from ../shared/calibration: a roofline for the
 * base model (weights and KV read at the measured copy bandwidth, matmuls at an efficiency of the
 * public peak) and the measured H100 LoRA kernels for LoRA. Every number that comes out of it is
 * "derived"; replace the file with measured figures once the GPU path runs.
 */
import type { RankMode } from "./cost-model";
import {
  activeParams,
  expertBytes,
  expertLoraPerRank,
  expertsTouched,
  kvBytesPerToken,
  loraBytesPerTokenRank,
  sharedParams,
  type LoraTargets,
  type ModelProfile,
} from "./model-profiles";

export type Link = "nvlink" | "infiniband" | "pcie";

export interface GpuCalibration {
  kind: "gpu";
  machine: string;
  source: string;
  /** HBM bytes per GPU and the share a serving engine may use. */
  hbmBytes: number;
  memoryUtilization: number;
  /** Per GPU: activations and workspace kept out of the KV/adapter pool. */
  activationReserveBytes: number;
  /** Measured device copy bandwidth (bytes/s) and the public bf16 dense peak (FLOP/s). */
  copyBytesPerSecond: number;
  peakFlops: number;
  /** Share of peak the base matmuls reach (an assumption, stated where used). */
  computeEfficiency: number;
  /** Per engine step: scheduling, sampling, graph launch. */
  stepOverheadUs: number;
  /** Padded gathered LoRA (bmm): fixed µs per site and achieved bytes/s, fitted to the bmm rows. */
  paddedFixedUs: number;
  paddedBytesPerSecond: number;
  /** True-rank segments: fixed µs per site (measured seg, T=1) and bytes/s (best measured floor/best). */
  trueRankFixedUs: number;
  trueRankBytesPerSecond: number;
  /** Links: bytes/s and one-way latency (µs); pulling activations costs this many times pushing. */
  links: Record<Link, { bytesPerSecond: number; latencyUs: number }>;
  pullPenalty: number;
  /** Adapters live in host memory; host → GPU over PCIe, storage → host when not cached. */
  hostToGpuBytesPerSecond: number;
  storageBytesPerSecond: number;
}

/** The shipped calibration (the same numbers as bench/calibrations/h100-derived.json). */
export const H100_DERIVED: GpuCalibration = {
  kind: "gpu",
  machine: "H100 80GB HBM3 (derived from ../shared/calibration; 96 GB Hopper HBM as in InfiniLoRA)",
  source:
    "h100-lora-pytorch-baselines.txt (copy 2.43 TB/s, bmm and seg LoRA rows); public specs: 989 TFLOP/s bf16, NVLink 900 GB/s, IB NDR 400 Gb/s, PCIe 5.0 x16 64 GB/s",
  hbmBytes: 96e9,
  memoryUtilization: 0.9,
  activationReserveBytes: 4e9,
  copyBytesPerSecond: 2.43e12,
  peakFlops: 989e12,
  computeEfficiency: 0.6,
  stepOverheadUs: 1000,
  paddedFixedUs: 25.1,
  paddedBytesPerSecond: 1.236e12,
  trueRankFixedUs: 8.5,
  trueRankBytesPerSecond: 0.377 * 2.43e12,
  links: {
    nvlink: { bytesPerSecond: 900e9, latencyUs: 3 },
    infiniband: { bytesPerSecond: 50e9, latencyUs: 5 },
    pcie: { bytesPerSecond: 64e9, latencyUs: 4 },
  },
  pullPenalty: 2.6,
  hostToGpuBytesPerSecond: 64e9,
  storageBytesPerSecond: 7e9,
};

/** What one engine step does, as the simulator hands it to a cost model. */
export interface StepShape {
  tokens: number;
  /** Σ over the step's tokens of the context each attends to (KV reads, attention FLOPs). */
  attendedTokens: number;
  /** Per distinct adapter: tokens using it and its rank. */
  adapters: ReadonlyArray<{ tokens: number; rank: number }>;
}

export class GpuCostModel {
  readonly kind = "gpu" as const;
  constructor(
    readonly calibration: GpuCalibration,
    readonly model: ModelProfile,
    readonly targets: LoraTargets = "attention+experts",
  ) {}

  get layers(): number {
    return this.model.layers;
  }

  /** Sites with a LoRA kernel per step: q, k, v, o and the three expert projections, per layer. */
  get sitesPerStep(): number {
    return this.model.layers * (this.targets === "attention+experts" ? 7 : 4);
  }

  /** Base model step on one instance (tensor parallel over its GPUs). */
  baseStepUs(step: StepShape): number {
    if (step.tokens === 0) return 0;
    const c = this.calibration;
    const m = this.model;
    const gpus = m.gpusPerInstance;
    const weights = sharedParams(m) * 2 + m.layers * expertsTouched(m, step.tokens) * expertBytes(m);
    const kv = step.attendedTokens * kvBytesPerToken(m);
    const memUs = ((weights + kv) / (c.copyBytesPerSecond * gpus)) * 1e6;
    const flops = 2 * activeParams(m) * step.tokens + 4 * m.layers * m.heads * m.headDim * step.attendedTokens;
    const computeUs = (flops / (c.peakFlops * c.computeEfficiency * gpus)) * 1e6;
    // Tensor parallel: two all-reduces of the activations per layer over NVLink.
    const tp =
      gpus > 1
        ? 2 *
          m.layers *
          (c.links.nvlink.latencyUs + ((step.tokens * m.hidden * 2) / c.links.nvlink.bytesPerSecond) * 1e6)
        : 0;
    return c.stepOverheadUs + Math.max(memUs, computeUs) + tp;
  }

  /** LoRA of one step on `gpus` GPUs (the executor's own, or a LoRA-server lane). */
  loraStepUs(step: StepShape, kernel: RankMode, gpus = this.model.gpusPerInstance): number {
    if (step.adapters.length === 0) return 0;
    const c = this.calibration;
    const tokens = step.adapters.reduce((s, a) => s + a.tokens, 0);
    const m = this.model;
    if (kernel === "padded") {
      // Every adapter padded to the batch's largest rank. Decode batches gather per token (bgmv,
      // the measured bmm rows); a long prefill reads each adapter once per segment (sgmv): the
      // kernel takes the cheaper of the two.
      const maxRank = Math.max(...step.adapters.map((a) => a.rank));
      const gathered = tokens * maxRank * loraBytesPerTokenRank(m, this.targets);
      const segments = step.adapters.reduce((s, a) => s + maxRank * this.touchedBytesPerRank(a.tokens), 0);
      const bytes = Math.min(gathered, segments) + tokens * this.activationBytesPerToken();
      return this.sitesPerStep * c.paddedFixedUs + (bytes / (c.paddedBytesPerSecond * gpus)) * 1e6;
    }
    // True rank: each distinct adapter's weights are read once, for the experts its tokens touch;
    // every token's activations are read and written at each site.
    let bytes = tokens * this.activationBytesPerToken();
    for (const a of step.adapters) bytes += a.rank * this.touchedBytesPerRank(a.tokens);
    return this.sitesPerStep * c.trueRankFixedUs + (bytes / (c.trueRankBytesPerSecond * gpus)) * 1e6;
  }

  /** Per unit of rank: an adapter's bytes that `tokens` of it touch (attention + their experts). */
  touchedBytesPerRank(tokens: number): number {
    const m = this.model;
    const experts = this.targets === "attention+experts" ? expertsTouched(m, tokens) : 0;
    return loraBytesPerTokenRank(m, "attention") + m.layers * experts * expertLoraPerRank(m);
  }

  /** Bytes of one token's LoRA inputs and outputs over all sites of a step (bf16). */
  activationBytesPerToken(): number {
    const m = this.model;
    const q = m.heads * m.headDim;
    const kv = m.kvHeads * m.headDim;
    const attention = 4 * m.hidden + q + 2 * kv + q + m.hidden;
    const experts = this.targets === "attention+experts" ? m.topK * 3 * (m.hidden + m.ffn) : 0;
    return 2 * m.layers * (attention + experts);
  }

  /** One step's activations to a LoRA server and back: two round trips per layer. */
  remoteUs(tokens: number, link: Link, push: boolean): number {
    const l = this.calibration.links[link];
    const latency = 2 * 2 * this.model.layers * l.latencyUs * (push ? 1 : this.calibration.pullPenalty);
    const bytes = 4 * this.model.layers * tokens * this.model.hidden * 2;
    return latency + (bytes / l.bytesPerSecond) * 1e6;
  }

  /** Seconds to bring an adapter onto a GPU (from host memory, or from storage first). */
  loadSeconds(bytes: number, fromStorage = false): number {
    const c = this.calibration;
    return bytes / c.hostToGpuBytesPerSecond + (fromStorage ? bytes / c.storageBytesPerSecond : 0);
  }
}
