/**
 * PEFT LoRA adapters with their weights: `inspectAdapter` (@loramesh/formats) validates the
 * directory from headers, then this reads A and B of every module and converts them to f32. Only
 * processes that compute (the base worker, the LoRA server, offline CLI commands) call it.
 */
import { AdapterError } from "@loramesh/errors";
import {
  adapterContentHashSync,
  inspectAdapter,
  SafetensorsError,
  SafetensorsFile,
  type AdapterModuleSpec,
  type ModelConfig,
} from "@loramesh/formats";

/** One LoRA module of an adapter: delta = scale · B·(A·x). */
export interface AdapterModule extends Pick<
  AdapterModuleSpec,
  "name" | "layer" | "projection" | "expert" | "rank" | "scale"
> {
  /** [rank, inFeatures] row-major. */
  a: Float32Array;
  /** [outFeatures, rank] row-major. */
  b: Float32Array;
  /**
   * True when A and B were stored as BF16: their f32 values are then exact in bf16, so the kernels
   * may hold them as bf16 (half the bytes per decode step) and compute the same bits.
   */
  bf16Exact?: boolean;
}

export interface LoraAdapter {
  dir: string;
  /** SHA-256 over adapter_config.json and adapter_model.safetensors. */
  contentHash: string;
  rank: number;
  alpha: number;
  targetModules: string[];
  modules: AdapterModule[];
  /** Bytes of A and B at true rank (f32). */
  sizeBytes: number;
}

/** Whether a module's A and B are BF16 in the checkpoint (see `AdapterModule.bf16Exact`). */
export function storedAsBf16(file: SafetensorsFile, m: Pick<AdapterModuleSpec, "keyA" | "keyB">): boolean {
  return file.entry(m.keyA).dtype === "BF16" && file.entry(m.keyB).dtype === "BF16";
}

/** Reads and validates an adapter directory against a base model. */
export function loadAdapter(dir: string, model: ModelConfig): LoraAdapter {
  const inspection = inspectAdapter(dir, model);
  let file: SafetensorsFile;
  try {
    file = SafetensorsFile.open(inspection.weightsPath);
  } catch (err) {
    if (err instanceof SafetensorsError)
      throw new AdapterError(`adapter_model.safetensors: ${err.message}`, { cause: err });
    throw err;
  }
  try {
    const modules: AdapterModule[] = inspection.modules.map((m) => {
      let a: Float32Array, b: Float32Array;
      try {
        a = file.readF32(m.keyA);
        b = file.readF32(m.keyB);
      } catch (err) {
        if (err instanceof SafetensorsError)
          throw new AdapterError(`adapter_model.safetensors: ${err.message}`, { cause: err });
        throw err;
      }
      const { name, layer, projection, expert, rank, scale } = m;
      return { name, layer, projection, expert, rank, scale, a, b, bf16Exact: storedAsBf16(file, m) };
    });
    return {
      dir,
      contentHash: adapterContentHashSync(inspection),
      rank: inspection.rank,
      alpha: inspection.alpha,
      targetModules: inspection.targetModules,
      modules,
      sizeBytes: inspection.sizeBytes,
    };
  } finally {
    file.close();
  }
}
