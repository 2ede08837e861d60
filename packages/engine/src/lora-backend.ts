/**
 * Where the LoRA deltas of a step come from. The forward pass calls `apply` once per LoRA site of
 * each layer with that site's input and output; the backend adds scale·B·(A·x) for each row's
 * adapter into `y`. Implementations: the local backend on the native batched kernels (coupled
 * mode) and, in the mesh, a remote LoRA server.
 */
import type { Tensor } from "@loramesh/native";
import type { ModelConfig } from "./model-config";

/** The sites of a decoder layer; q/k/v and gate/up share their input and run as one call. */
export type LoraSite = "qkv" | "o" | "gate_up" | "down";

export interface LoraSiteCall {
  layer: number;
  site: LoraSite;
  /** Input activations [rows, inFeatures]. */
  x: Tensor<"f32">;
  /** Output [rows, Σ slice widths]; the delta is added in place. */
  y: Tensor<"f32">;
  /** Distinct adapter ids of the step; rows refer to them by index. */
  adapters: readonly string[];
  /** For each row, an index into `adapters`, or −1 for none. */
  rowAdapter: Int32Array;
  /** MoE expert sites: each row's expert (rows are routed token–expert pairs). */
  rowExpert?: Int32Array;
}

export interface LoraBackend {
  /** Whether the backend can serve this adapter now (hybrid routing asks this). */
  has(adapterId: string): boolean;
  apply(call: LoraSiteCall): Promise<void>;
}

/** Input width and total output width (stacked slices) of a site. */
export function siteShape(c: ModelConfig, site: LoraSite): { hIn: number; nOut: number } {
  const q = c.numHeads * c.headDim,
    kv = c.numKvHeads * c.headDim;
  switch (site) {
    case "qkv":
      return { hIn: c.hiddenSize, nOut: q + 2 * kv };
    case "o":
      return { hIn: q, nOut: c.hiddenSize };
    case "gate_up":
      return { hIn: c.hiddenSize, nOut: 2 * c.intermediateSize };
    case "down":
      return { hIn: c.intermediateSize, nOut: c.hiddenSize };
  }
}
