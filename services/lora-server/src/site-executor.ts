/**
 * The LoRA server's rule for one work item: check it against the model, hand it to the cross-worker
 * batcher, and count what was served. It sees decoded work (`@loramesh/lora-wire`), never protobuf.
 */
import { InvalidArgumentError } from "@loramesh/errors";
import { siteShape, type LoraSite, type ModelConfig } from "@loramesh/formats";
import type { ReceivedWork, SiteExecutor } from "@loramesh/lora-wire";
import type { LayerGate } from "@loramesh/engine";
import type { SiteBatcher } from "./site-batcher";

export interface LoraSiteExecutorOptions {
  model: ModelConfig;
  batcher: SiteBatcher;
  /** Layers of adapters still loading: an item waits for its layer of each adapter it uses. */
  layers?: LayerGate;
  /** Longest an item waits for a layer to become resident. */
  layerWaitMs?: number;
  /** Told about every served item (metrics). */
  onServed?: (work: ReceivedWork, rowAdapterIds: Array<string | undefined>, delta: Float32Array) => void;
}

export class LoraSiteExecutor implements SiteExecutor {
  private readonly model: ModelConfig;
  private readonly batcher: SiteBatcher;
  private readonly onServed: NonNullable<LoraSiteExecutorOptions["onServed"]>;
  private readonly layers: LayerGate | undefined;
  private readonly layerWaitMs: number;
  /** Rows served since start (heartbeats derive a rate from it). */
  rowsServed = 0;

  constructor(options: LoraSiteExecutorOptions) {
    this.model = options.model;
    this.batcher = options.batcher;
    this.onServed = options.onServed ?? (() => undefined);
    this.layers = options.layers;
    this.layerWaitMs = options.layerWaitMs ?? 30_000;
  }

  hInOf(site: LoraSite): number {
    return siteShape(this.model, site).hIn;
  }

  async execute(work: ReceivedWork, streamId: number): Promise<{ delta: Float32Array; nOut: number }> {
    if (work.layer >= this.model.numLayers) throw new InvalidArgumentError(`layer ${work.layer} does not exist`);
    const { hIn, nOut } = siteShape(this.model, work.site);
    const moe = work.rowExpert.length > 0;
    if (moe && this.model.numExperts === 0)
      throw new InvalidArgumentError("row_expert must have one entry per row on an MoE model");
    const rowAdapterIds = work.rowAdapter.map((i) => (i < 0 ? undefined : work.adapterIds[i]));
    const used = rowAdapterIds.filter((id): id is string => id !== undefined);
    await this.layers?.wait(used, work.layer, this.layerWaitMs);
    const delta = await this.batcher.submit(
      {
        layer: work.layer,
        site: work.site,
        x: work.x,
        rows: work.rows,
        hIn,
        nOut,
        rowAdapterIds,
        rowExpert: moe ? Int32Array.from(work.rowExpert) : undefined,
      },
      streamId,
    );
    this.rowsServed += work.rows;
    this.onServed(work, rowAdapterIds, delta);
    return { delta, nOut };
  }
}
