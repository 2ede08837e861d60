/**
 * Coupled mode: adapters resident in this process, deltas from the native batched heterogeneous-rank
 * LoRA kernels. Adapter weights are packed per (layer, site) at true rank across all resident
 * adapters (a slot per adapter; for MoE expert sites a key per (slot, expert)) and repacked when the
 * resident set changes. The native step uses `nativeSiteBackend()`: the same packing for every
 * (layer, site), copied into a native LocalSiteBackend that runs the kernels on the step's thread.
 */
import { NotFoundError } from "@loramesh/errors";
import {
  i32,
  native,
  nativeStep,
  packLoraWeights,
  type LocalSiteWeights,
  type LoraSliceWeights,
  type LoraWeights,
  type SiteBackendHandle,
} from "@loramesh/native";
import type { ProjectionName, LoraSite, ModelConfig } from "@loramesh/formats";
import type { AdapterModule, LoraAdapter } from "./adapter";
import type { LoraBackend, LoraSiteCall } from "./lora-backend";

const SITES: readonly LoraSite[] = ["qkv", "o", "gate_up", "down"];

const SLICES: Record<LoraSite, ProjectionName[]> = {
  qkv: ["q", "k", "v"],
  o: ["o"],
  gate_up: ["gate", "up"],
  down: ["down"],
};

export class LocalLoraBackend implements LoraBackend {
  private readonly adapters = new Map<string, LoraAdapter>();
  private slots: string[] = [];
  private packed = new Map<string, LoraWeights | null>();
  private native: SiteBackendHandle | undefined;

  constructor(private readonly config: ModelConfig) {}

  add(id: string, adapter: LoraAdapter): void {
    this.adapters.set(id, adapter);
    this.invalidate();
  }

  remove(id: string): boolean {
    const had = this.adapters.delete(id);
    if (had) this.invalidate();
    return had;
  }

  has(id: string): boolean {
    return this.adapters.has(id);
  }

  contentHash(id: string): string | undefined {
    return this.adapters.get(id)?.contentHash;
  }

  get(id: string): LoraAdapter | undefined {
    return this.adapters.get(id);
  }

  ids(): string[] {
    return [...this.adapters.keys()];
  }

  /** The resident set as a native site backend (rebuilt after a change; pools copied once). */
  nativeSiteBackend(): SiteBackendHandle {
    if (this.native) return this.native;
    const c = this.config;
    const sites: Array<LocalSiteWeights | null> = [];
    for (let layer = 0; layer < c.numLayers; layer++) {
      for (const site of SITES) {
        const moe = c.numExperts > 0 && (site === "gate_up" || site === "down");
        const weights = this.pack(layer, site, moe);
        sites.push(weights ? { ...weights, moe } : null);
      }
    }
    this.native = nativeStep.localSiteBackend(this.slots, c.numExperts, sites);
    return this.native;
  }

  async apply(call: LoraSiteCall): Promise<void> {
    const weights = this.weightsFor(call.layer, call.site, call.rowExpert !== undefined);
    if (!weights) return; // no resident adapter touches this site
    const used = new Set(call.rowAdapter);
    const slotOf = call.adapters.map((id, index) => {
      if (!used.has(index)) return -1;
      const slot = this.slots.indexOf(id);
      if (slot < 0) throw new NotFoundError(`adapter ${id} is not resident on this worker`);
      return slot;
    });
    const rows = call.rowAdapter.length;
    const rowSlot = new Int32Array(rows);
    for (let r = 0; r < rows; r++) {
      const a = call.rowAdapter[r] as number;
      rowSlot[r] = a < 0 ? -1 : (slotOf[a] as number);
    }
    if (call.rowExpert) {
      await native.loraApplyMoe(
        weights,
        this.config.numExperts,
        call.x,
        null,
        i32([rows], rowSlot),
        i32([rows], call.rowExpert),
        null,
        call.y,
      );
    } else {
      await native.loraApply(weights, call.x, i32([rows], rowSlot), call.y);
    }
  }

  /** Repacks one layer's sites on next use: a layer-wise load just added that layer's modules. */
  refreshLayer(layer: number): void {
    for (const key of [...this.packed.keys()]) if (key.startsWith(`${layer}/`)) this.packed.delete(key);
    this.native = undefined; // its copy of that layer's pools is stale too
  }

  /** Adapter ids in slot order: the keys of every packed site index them. */
  slotIds(): readonly string[] {
    return this.slots;
  }

  /**
   * Every site some resident adapter touches, packed as the kernels read it (the LoRA server hands
   * these to its shared-memory ring thread). MLP sites of an MoE model are packed per expert.
   */
  packedSites(): Array<{ layer: number; site: LoraSite; moe: boolean; weights: LoraWeights }> {
    const out: Array<{ layer: number; site: LoraSite; moe: boolean; weights: LoraWeights }> = [];
    const sites: LoraSite[] = ["qkv", "o", "gate_up", "down"];
    for (let layer = 0; layer < this.config.numLayers; layer++)
      for (const site of sites)
        for (const moe of this.config.numExperts > 0 && (site === "gate_up" || site === "down")
          ? [false, true]
          : [false]) {
          const weights = this.weightsFor(layer, site, moe);
          if (weights) out.push({ layer, site, moe, weights });
        }
    return out;
  }

  private invalidate(): void {
    this.slots = [...this.adapters.keys()];
    this.packed.clear();
    this.native = undefined;
  }

  private weightsFor(layer: number, site: LoraSite, moe: boolean): LoraWeights | null {
    const key = `${layer}/${site}/${moe ? "moe" : "dense"}`;
    const cached = this.packed.get(key);
    if (cached !== undefined) return cached;
    const weights = this.pack(layer, site, moe);
    this.packed.set(key, weights);
    return weights;
  }

  /** Every resident adapter's weights for one (layer, site), at true rank; null when none touches it. */
  private pack(layer: number, site: LoraSite, moe: boolean): LoraWeights | null {
    const c = this.config;
    const q = c.numHeads * c.headDim,
      kv = c.numKvHeads * c.headDim;
    const width: Record<ProjectionName, number> = {
      q,
      k: kv,
      v: kv,
      o: c.hiddenSize,
      gate: c.intermediateSize,
      up: c.intermediateSize,
      down: c.hiddenSize,
    };
    const inFeatures: Record<LoraSite, number> = {
      qkv: c.hiddenSize,
      o: q,
      gate_up: c.hiddenSize,
      down: c.intermediateSize,
    };
    const projections = SLICES[site];
    const experts = moe ? c.numExperts : 1;
    const keys: Array<Array<LoraSliceWeights | null>> = [];
    let any = false;
    // bf16 pools when every module here was stored as bf16: exact, so the same bits at half the bytes.
    let bf16 = true;
    for (const id of this.slots) {
      const adapter = this.adapters.get(id) as LoraAdapter;
      for (let e = 0; e < experts; e++) {
        keys.push(
          projections.map((p) => {
            const m = adapter.modules.find(
              (x: AdapterModule) =>
                x.layer === layer && x.projection === p && (moe ? x.expert === e : x.expert === undefined),
            );
            if (!m) return null;
            any = true;
            bf16 &&= m.bf16Exact === true;
            return { rank: m.rank, scale: m.scale, a: m.a, b: m.b };
          }),
        );
      }
    }
    return any
      ? packLoraWeights(
          keys,
          inFeatures[site],
          projections.map((p) => width[p]),
          bf16 ? "bf16" : "f32",
        )
      : null;
  }
}
