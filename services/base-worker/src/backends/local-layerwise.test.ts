// Layer-wise loading of a coupled or hybrid worker's local adapters, on the real engine and kernels
// with the tiny-llama fixture: a step of a request for a cold adapter computes its early layers while
// later ones are still loading, a site waits for exactly its layer, and the tokens equal a whole load.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Engine, loadAdapter, LocalLoraBackend, Model, type LoraBackend, type LoraSiteCall } from "@loramesh/engine";
import { Tokenizer } from "@loramesh/formats";
import { captureLogger, GOLDEN_DIR } from "@loramesh/testing";
import { expect } from "chai";
import { HybridLoraBackend } from "./hybrid-lora-backend";
import { LocalAdapters, type LocalAdaptersOptions } from "./local-adapters";

const MODEL_DIR = join(GOLDEN_DIR, "models", "tiny-llama");
const adapterDir = (name: string): string => join(GOLDEN_DIR, "adapters", "tiny-llama", name);
const COLD = "chat-r16-all"; // LoRA on every projection of every layer
const OTHER = "sql-r8"; // held by the hybrid worker's remote half
const PROMPT = (
  JSON.parse(readFileSync(join(GOLDEN_DIR, "expected", "tiny-llama.json"), "utf8")) as {
    prompts: Array<{ ids: number[] }>;
  }
).prompts[0]?.ids as number[];
const SAMPLING = { maxTokens: 6, temperature: 0, ignoreEos: true };

/** A backend that records each site it served for `adapter` (by layer) and passes the rest on. */
class Recording implements LoraBackend {
  constructor(
    private readonly inner: LoraBackend,
    private readonly adapter: string,
    private readonly onSite: (layer: number) => void,
  ) {}
  has = (id: string): boolean => this.inner.has(id);
  contentHash = (id: string): string | undefined => this.inner.contentHash?.(id);
  nativeSiteBackend = () => this.inner.nativeSiteBackend?.();
  async apply(call: LoraSiteCall): Promise<void> {
    await this.inner.apply(call);
    const mine = call.adapters.indexOf(this.adapter);
    if (mine >= 0 && call.rowAdapter.includes(mine) && call.site === "qkv") this.onSite(call.layer);
  }
}

describe("layer-wise loading of a worker's local adapters (coupled and hybrid)", function () {
  this.timeout(120_000);
  const model = Model.load(MODEL_DIR);
  const tokenizer = Tokenizer.load(MODEL_DIR, model.config.eosTokenIds);
  const layers = model.config.numLayers;
  const local = (o: Partial<LocalAdaptersOptions>): LocalAdapters =>
    new LocalAdapters({
      model: model.config,
      capacityBytes: 1 << 26,
      logger: captureLogger(),
      onChange: () => undefined,
      ...o,
    });
  const noProgress = async (): Promise<void> => undefined;

  /** The engine's LoRA backend in each mode, built around the worker's local adapters. */
  const modes: Record<string, (l: LocalAdapters) => LoraBackend> = {
    coupled: (l) => l.backend,
    hybrid: (l) => {
      const remote = new LocalLoraBackend(model.config);
      remote.add(OTHER, loadAdapter(adapterDir(OTHER), model.config));
      return new HybridLoraBackend({ local: l.backend, remote });
    },
  };

  const generate = async (lora: LoraBackend, adapterId?: string): Promise<number[]> =>
    (
      await new Engine(model, tokenizer, { lora }).submit({
        promptIds: PROMPT,
        ...(adapterId ? { adapterId } : {}),
        sampling: SAMPLING,
      }).result
    ).tokenIds;

  for (const [mode, backendOf] of Object.entries(modes)) {
    it(`${mode}: a cold adapter's step starts before its last layer is resident and matches a whole load`, async () => {
      const whole = local({ layerwise: false });
      await whole.load(COLD, adapterDir(COLD), noProgress);
      const expected = await generate(backendOf(whole), COLD);
      expect(expected).to.not.deep.equal(await generate(backendOf(whole)), "the adapter must change the output");

      const events: string[] = [];
      let engine: Engine | undefined;
      let result: Promise<number[]> | undefined;
      let servedLayer0: (() => void) | undefined;
      const layer0 = new Promise<void>((resolve) => (servedLayer0 = resolve));
      const cold: LocalAdapters = local({
        onLayerResident: async (_id, ready, total) => {
          events.push(`resident ${ready}/${total}`);
          if (ready !== 1) return;
          // Only layer 0 is resident: the request is admitted and its step runs layer 0's sites,
          // then waits at layer 1; the load goes on only once layer 0 was served.
          const lora = new Recording(backendOf(cold), COLD, (layer) => {
            events.push(`site ${layer}`);
            if (layer === 0) servedLayer0?.();
          });
          engine = new Engine(model, tokenizer, { lora });
          result = engine
            .submit({ promptIds: PROMPT, adapterId: COLD, sampling: SAMPLING })
            .result.then((r) => r.tokenIds);
          await layer0;
        },
      });
      await cold.load(COLD, adapterDir(COLD), noProgress);
      expect(cold.layers.isLoading(COLD)).to.equal(false);
      expect(await result).to.deep.equal(expected);
      const firstSite = events.indexOf("site 0");
      const allResident = events.indexOf(`resident ${layers}/${layers}`);
      expect(firstSite, events.join(", ")).to.be.at.least(0).and.lessThan(allResident);
      // The first step's site for the last layer ran only after that layer was resident.
      const lastSite = events.indexOf(`site ${layers - 1}`);
      expect(lastSite, events.join(", ")).to.be.greaterThan(events.indexOf(`resident ${layers}/${layers}`));
      // Once loaded, steps take the native kernels again (no per-site JavaScript).
      expect(cold.backend.nativeSiteBackend()).to.not.equal(undefined);
    });
  }

  it("an adapter unloaded mid-load fails the waiting step's sequence and leaves nothing resident", async () => {
    let result: Promise<unknown> | undefined;
    const l: LocalAdapters = local({
      onLayerResident: async (id, ready) => {
        if (ready !== 1) return;
        const engine = new Engine(model, tokenizer, { lora: l.backend });
        result = engine
          .submit({ promptIds: PROMPT, adapterId: COLD, sampling: SAMPLING })
          .result.catch((e: unknown) => e);
        // Let the step reach a site that waits for a later layer, then drop the adapter.
        await new Promise((r) => setImmediate(r));
        l.unload(id);
      },
    });
    const load = await l.load(COLD, adapterDir(COLD), noProgress).catch((e: unknown) => e);
    expect(load).to.be.instanceOf(Error);
    expect((load as Error).message).to.match(/unloaded while loading/);
    expect(l.ids()).to.deep.equal([]);
    expect(await result).to.be.instanceOf(Error);
  });
});
