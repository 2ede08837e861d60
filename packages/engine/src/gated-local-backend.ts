/**
 * Local adapters that may still be loading layer by layer (a coupled or hybrid worker): a site call
 * for layer L waits only until layer L of each adapter its rows use is resident. While no adapter
 * is loading, steps take the local kernels' native site backend as before; during a load they go
 * through `apply`, where the waiting happens.
 */
import type { SiteBackendHandle } from "@loramesh/native";
import type { LayerGate } from "./layer-gate";
import type { LocalLoraBackend } from "./local-lora-backend";
import type { LoraBackend, LoraSiteCall } from "./lora-backend";

export class GatedLocalBackend implements LoraBackend {
  constructor(
    readonly local: LocalLoraBackend,
    private readonly gate: LayerGate,
    /** Longest a site waits for a layer. */
    private readonly layerWaitMs: number,
  ) {}

  has(adapterId: string): boolean {
    return this.local.has(adapterId);
  }

  contentHash(adapterId: string): string | undefined {
    return this.local.contentHash(adapterId);
  }

  nativeSiteBackend(): SiteBackendHandle | undefined {
    return this.gate.anyLoading() ? undefined : this.local.nativeSiteBackend();
  }

  async apply(call: LoraSiteCall): Promise<void> {
    if (this.gate.anyLoading()) {
      const used = new Set<string>();
      for (const a of call.rowAdapter) if (a >= 0) used.add(call.adapters[a] as string);
      await this.gate.wait([...used], call.layer, this.layerWaitMs);
    }
    await this.local.apply(call);
  }
}
