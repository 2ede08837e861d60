/** @loramesh/engine: Hugging Face checkpoints and PEFT adapters on the native core. */
export { type AdapterModule, loadAdapter, type LoraAdapter } from "./adapter";
export { type LayerwiseAdapter, openAdapterLayerwise } from "./adapter-layers";
export { Checkpoint } from "./checkpoint";
export {
  Engine,
  type EngineOptions,
  type EngineStats,
  type FinishReason,
  type SequenceHandle,
  type SequenceRequest,
  type SequenceResult,
  type SequenceUpdate,
  type StepTiming,
} from "./engine";
export { DEFAULT_SITE_TIMEOUT_MS, forward, type ForwardOptions, type ForwardSequence } from "./forward";
export { KvCache } from "./kv-cache";
export {
  BASE_PREFIX_KEY,
  extendBlockHashes,
  PrefixCache,
  type PrefixCacheCounts,
  type PrefixCacheStats,
} from "./prefix-cache";
export { GatedLocalBackend } from "./gated-local-backend";
export { LayerGate } from "./layer-gate";
export { publishLayers, type PublishLayersOptions } from "./layerwise-load";
export { LocalLoraBackend } from "./local-lora-backend";
export { LoraAdaptersUnavailableError, type LoraBackend, type LoraSiteCall } from "./lora-backend";
export { type DenseMlp, type LayerWeights, Model, type MoeMlp } from "./model";
export {
  argmax,
  DEFAULT_MAX_TOKENS,
  MAX_LOGPROBS,
  Rng,
  Sampler,
  samplingOptions,
  type SamplingOptions,
  type TokenLogprob,
  tokenLogprob,
  type TopLogprob,
} from "./sampling";
export { type Weight, WeightLoader } from "./weights";
