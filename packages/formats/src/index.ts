/** @loramesh/formats: model and adapter files read in pure TypeScript; never loads the native addon. */
export {
  adapterContentHash,
  adapterContentHashSync,
  type AdapterInspection,
  type AdapterModuleSpec,
  type BaseModule,
  inspectAdapter,
  loraTargets,
  parsePeftConfig,
  type ProjectionName,
} from "./adapter-config";
export {
  ADAPTER_LIMITS,
  type AdapterFiles,
  adapterFiles,
  type AdapterLimits,
  resolveAdapterDir,
} from "./adapter-files";
export { checkAdapterWeights } from "./adapter-weights";
export { compileConfigRegex, MAX_CONFIG_REGEX_LENGTH, type SafeRegex } from "./safe-regex";
export { type LoraSite, siteShape } from "./lora-site";
export {
  loadModelConfig,
  type ModelConfig,
  type ModelType,
  parseModelConfig,
  type RopeConfig,
  SUPPORTED_MODEL_TYPES,
  UnsupportedModelError,
} from "./model-config";
export { LOADABLE_DTYPES, MAX_HEADER_BYTES, SafetensorsError, SafetensorsFile, type TensorEntry } from "./safetensors";
export { type ChatMessage, IncrementalDecoder, Tokenizer } from "./tokenizer";
