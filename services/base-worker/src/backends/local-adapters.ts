/**
 * Adapters a coupled or hybrid worker keeps locally, under a byte budget, loaded by BullMQ jobs.
 * A full worker refuses the load (the provisioner's policy only assigns what fits; the adapter
 * stays served remotely in hybrid mode).
 */
import { ResourceExhaustedError } from "@loramesh/errors";
import { type Logger } from "@loramesh/core";
import { LocalLoraBackend, loadAdapter } from "@loramesh/engine";
import { type ModelConfig } from "@loramesh/formats";

export class LocalAdapters {
  readonly backend: LocalLoraBackend;
  private readonly sizes = new Map<string, number>();

  constructor(
    private readonly model: ModelConfig,
    readonly capacityBytes: number,
    private readonly logger: Logger,
    private readonly onChange: () => void,
  ) {
    this.backend = new LocalLoraBackend(model);
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
    const adapter = loadAdapter(dir, this.model);
    if (this.bytesUsed + adapter.sizeBytes > this.capacityBytes) {
      throw new ResourceExhaustedError(
        `adapter ${id} (${adapter.sizeBytes} bytes) does not fit the worker's ${this.capacityBytes}-byte adapter budget`,
      );
    }
    this.backend.add(id, adapter);
    this.sizes.set(id, adapter.sizeBytes);
    await progress(1);
    this.logger.info("adapter resident locally", { adapterId: id });
    this.onChange();
    return { sizeBytes: adapter.sizeBytes };
  }

  unload(id: string): void {
    if (this.sizes.delete(id)) {
      this.backend.remove(id);
      this.onChange();
    }
  }
}
