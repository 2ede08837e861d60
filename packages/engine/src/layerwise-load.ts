/**
 * The layer-wise load loop, shared by the LoRA server's pool and a worker's local adapters: the
 * adapter is already in the backend (with no modules) and its gate is open; each layer is read,
 * published to the kernels, and the site calls waiting for it are woken, one layer at a time.
 */
import { FailedPreconditionError } from "@loramesh/errors";
import type { LayerwiseAdapter } from "./adapter-layers";
import type { LayerGate } from "./layer-gate";
import type { LocalLoraBackend } from "./local-lora-backend";

export interface PublishLayersOptions {
  id: string;
  reader: LayerwiseAdapter;
  backend: LocalLoraBackend;
  gate: LayerGate;
  /** False once the adapter was unloaded (or replaced) mid-load: the load stops with an error. */
  stillLoading: () => boolean;
  /** Told (and awaited) each time another layer is resident. */
  onLayerResident?: (id: string, readyLayers: number, numLayers: number) => void | Promise<void>;
  /** Load progress in [0, 1] per layer. */
  progress?: (fraction: number) => Promise<void>;
}

/** Publishes every layer of `reader`; ends the gate on success (the caller aborts it on failure). */
export async function publishLayers(o: PublishLayersOptions): Promise<void> {
  const { id, reader, backend, gate } = o;
  for (let layer = 0; layer < reader.numLayers; layer++) {
    if (!o.stillLoading()) throw new FailedPreconditionError(`adapter ${id} was unloaded while loading`);
    reader.readLayer(layer);
    backend.refreshLayer(layer);
    gate.advance(id, layer + 1);
    await o.onLayerResident?.(id, layer + 1, reader.numLayers);
    await o.progress?.((layer + 1) / reader.numLayers);
    // Let waiting site calls (and steps) run between layers.
    await new Promise((r) => setImmediate(r));
  }
  gate.end(id);
}
