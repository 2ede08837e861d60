/**
 * Where the LoRA deltas of a step come from. The forward pass calls `apply` once per LoRA site of
 * each layer with that site's input and output; the backend adds scale·B·(A·x) for each row's
 * adapter into `y`. Implementations: the local backend on the native batched kernels (coupled
 * mode) and, in the mesh, a remote LoRA server.
 */
import type { Tensor } from "@loramesh/native";
import type { LoraSite } from "@loramesh/formats";

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
  /**
   * SHA-256 of the adapter's weights as this backend serves them (the prefix cache keys on it);
   * undefined when unknown, and then nothing computed under the adapter is cached.
   */
  contentHash?(adapterId: string): string | undefined;
  apply(call: LoraSiteCall): Promise<void>;
}
