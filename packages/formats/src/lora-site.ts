/** The LoRA sites of a decoder layer and their widths, from the model config alone. */
import type { ModelConfig } from "./model-config";

/** The sites of a decoder layer; q/k/v and gate/up share their input and run as one call. */
export type LoraSite = "qkv" | "o" | "gate_up" | "down";

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
