/**
 * Adapters a coupled or hybrid worker keeps locally, under a byte budget, loaded by BullMQ jobs.
 * A full worker refuses the load (the provisioner's policy only assigns what fits; the adapter
 * stays served remotely in hybrid mode). Loads are layer-wise by default, with the LoRA server's
 * machinery (`publishLayers`, `LayerGate`): the adapter counts as resident (and is reported, so
 * requests are admitted) once its hash checks out, and a step's site for layer L waits only for
 * layer L (`GatedLocalBackend`).
 */
import { ResourceExhaustedError } from "@loramesh/errors";
import { type Logger } from "@loramesh/core";
import {
  GatedLocalBackend,
  LayerGate,
  LocalLoraBackend,
  loadAdapter,
  openAdapterLayerwise,
  publishLayers,
  type LoraAdapter,
} from "@loramesh/engine";
import { type ModelConfig } from "@loramesh/formats";

export interface LocalAdaptersOptions {
  model: ModelConfig;
  capacityBytes: number;
  logger: Logger;
  /** Called when the resident set changes (the agent heartbeats at once). */
  onChange: () => void;
  /** Read adapters layer by layer, serving early layers while later ones load (default on). */
  layerwise?: boolean;
  /** Longest a site waits for a layer of a loading adapter (default 30 s). */
  layerWaitMs?: number;
  /** Told (and awaited) each time a layer-wise load makes another layer resident. */
  onLayerResident?: (id: string, readyLayers: number, numLayers: number) => void | Promise<void>;
}

export class LocalAdapters {
  /** What the engine (or the hybrid split) calls for local adapters. */
  readonly backend: GatedLocalBackend;
  /** Layers of adapters still loading. */
  readonly layers = new LayerGate();
  readonly capacityBytes: number;
  private readonly kernels: LocalLoraBackend;
  private readonly sizes = new Map<string, number>();

  constructor(private readonly options: LocalAdaptersOptions) {
    this.capacityBytes = options.capacityBytes;
    this.kernels = new LocalLoraBackend(options.model);
    this.backend = new GatedLocalBackend(this.kernels, this.layers, options.layerWaitMs ?? 30_000);
  }

  get bytesUsed(): number {
    let n = 0;
    for (const s of this.sizes.values()) n += s;
    return n;
  }

  ids(): string[] {
    return [...this.sizes.keys()].sort();
  }

  async load(id: string, dir: string, progress: (p: number) => Promise<void>): Promise<{ sizeBytes: number }> {
    const known = this.sizes.get(id);
    if (known !== undefined) return { sizeBytes: known };
    await progress(0.1);
    if (this.options.layerwise ?? true) return this.loadLayerwise(id, dir, progress);
    const adapter = loadAdapter(dir, this.options.model);
    this.admit(id, adapter);
    this.kernels.add(id, adapter);
    this.sizes.set(id, adapter.sizeBytes);
    await progress(1);
    this.options.logger.info("adapter resident locally", { adapterId: id });
    this.options.onChange();
    return { sizeBytes: adapter.sizeBytes };
  }

  unload(id: string): void {
    if (this.sizes.delete(id)) {
      this.layers.abort(id, "unloaded while loading");
      this.kernels.remove(id);
      this.options.onChange();
    }
  }

  private admit(id: string, adapter: LoraAdapter): void {
    if (this.bytesUsed + adapter.sizeBytes > this.capacityBytes) {
      throw new ResourceExhaustedError(
        `adapter ${id} (${adapter.sizeBytes} bytes) does not fit the worker's ${this.capacityBytes}-byte adapter budget`,
      );
    }
  }

  private async loadLayerwise(
    id: string,
    dir: string,
    progress: (p: number) => Promise<void>,
  ): Promise<{ sizeBytes: number }> {
    const reader = await openAdapterLayerwise(dir, this.options.model);
    const { adapter } = reader;
    let began = false;
    try {
      const raced = this.sizes.get(id); // another load of the same id got there meanwhile
      if (raced !== undefined) return { sizeBytes: raced };
      this.admit(id, adapter);
      this.layers.begin(id);
      began = true;
      this.kernels.add(id, adapter);
      this.sizes.set(id, adapter.sizeBytes);
      this.options.onChange();
      await publishLayers({
        id,
        reader,
        backend: this.kernels,
        gate: this.layers,
        stillLoading: () => this.kernels.get(id) === adapter,
        ...(this.options.onLayerResident ? { onLayerResident: this.options.onLayerResident } : {}),
        progress: (f) => progress(0.1 + 0.9 * f),
      });
    } catch (err) {
      if (began) this.layers.abort(id, "its load failed");
      if (this.kernels.get(id) === adapter) {
        this.kernels.remove(id);
        this.sizes.delete(id);
        this.options.onChange();
      }
      throw err;
    } finally {
      reader.close();
    }
    this.options.logger.info("adapter resident locally", { adapterId: id, layerwise: true });
    return { sizeBytes: adapter.sizeBytes };
  }
}
