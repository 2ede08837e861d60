/**
 * Reading an adapter one model layer at a time, for layer-wise loading: the headers are validated
 * and the content hash checked first (streamed, so the event loop keeps serving), then each call to
 * `readLayer` converts that layer's A and B to f32. The caller publishes layers as they arrive.
 */
import { AdapterError } from "@loramesh/errors";
import {
  adapterContentHash,
  inspectAdapter,
  SafetensorsError,
  SafetensorsFile,
  type AdapterInspection,
  type ModelConfig,
} from "@loramesh/formats";
import { storedAsBf16, type AdapterModule, type LoraAdapter } from "./adapter";

export interface LayerwiseAdapter {
  /** The adapter with no modules yet; `readLayer` appends to `modules`. */
  readonly adapter: LoraAdapter;
  readonly numLayers: number;
  /** Converts layer `layer`'s modules and appends them to `adapter.modules`. */
  readLayer(layer: number): AdapterModule[];
  close(): void;
}

/** Validates an adapter directory and checks its content hash; nothing is converted yet. */
export async function openAdapterLayerwise(dir: string, model: ModelConfig): Promise<LayerwiseAdapter> {
  const inspection = inspectAdapter(dir, model);
  const contentHash = await adapterContentHash(inspection);
  const file = openWeights(inspection);
  const adapter: LoraAdapter = {
    dir,
    contentHash,
    rank: inspection.rank,
    alpha: inspection.alpha,
    targetModules: inspection.targetModules,
    modules: [],
    sizeBytes: inspection.sizeBytes,
  };
  return {
    adapter,
    numLayers: model.numLayers,
    readLayer: (layer) => {
      const read = inspection.modules
        .filter((m) => m.layer === layer)
        .map((m): AdapterModule => {
          const { name, projection, expert, rank, scale } = m;
          const a = readF32(file, m.keyA),
            b = readF32(file, m.keyB);
          return { name, layer, projection, expert, rank, scale, a, b, bf16Exact: storedAsBf16(file, m) };
        });
      adapter.modules.push(...read);
      return read;
    },
    close: () => file.close(),
  };
}

function openWeights(inspection: AdapterInspection): SafetensorsFile {
  try {
    return SafetensorsFile.open(inspection.weightsPath);
  } catch (err) {
    if (err instanceof SafetensorsError)
      throw new AdapterError(`adapter_model.safetensors: ${err.message}`, { cause: err });
    throw err;
  }
}

function readF32(file: SafetensorsFile, key: string): Float32Array {
  try {
    return file.readF32(key);
  } catch (err) {
    if (err instanceof SafetensorsError)
      throw new AdapterError(`adapter_model.safetensors: ${err.message}`, { cause: err });
    throw err;
  }
}
