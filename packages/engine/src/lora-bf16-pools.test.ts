import { expect } from "chai";
import { fromBf16, toBf16 } from "@loramesh/native";
import { loadAdapter, type LoraAdapter } from "./adapter";
import { forward } from "./forward";
import { KvCache } from "./kv-cache";
import { LocalLoraBackend } from "./local-lora-backend";
import { Model } from "./model";
import { adapterDir, modelDir } from "./test-fixtures";

/** The adapter with every A and B value rounded to bf16, flagged as stored in bf16 or not. */
function roundedToBf16(adapter: LoraAdapter, bf16Exact: boolean): LoraAdapter {
  return {
    ...adapter,
    modules: adapter.modules.map((m) => ({
      ...m,
      a: fromBf16(toBf16(m.a)),
      b: fromBf16(toBf16(m.b)),
      bf16Exact,
    })),
  };
}

async function prefillLogits(
  model: Model,
  lora: LocalLoraBackend,
  adapterId: string | undefined,
): Promise<Float32Array> {
  const cache = new KvCache(model.config.numLayers, 8, 4, model.config.numKvHeads, model.config.headDim);
  const table: number[] = [];
  cache.ensure(table, 8);
  const [logits] = await forward(model, cache, lora, [
    { tokens: [1, 5, 9, 13, 17], startPosition: 0, blockTable: table, adapterId, logits: "all" },
  ]);
  return logits as Float32Array;
}

describe("LoRA pools in the adapter's stored precision", () => {
  it("packs adapters stored as bf16 into bf16 pools and computes the same bits as f32 pools", async () => {
    const model = Model.load(modelDir("tiny-llama"));
    const loaded = loadAdapter(adapterDir("tiny-llama", "chat-r16-all"), model.config);
    // The fixture is stored as F32: its values are not bf16-exact, so it must stay f32.
    expect(loaded.modules.every((m) => m.bf16Exact === false)).to.equal(true);

    const asBf16 = new LocalLoraBackend(model.config);
    asBf16.add("a", roundedToBf16(loaded, true));
    const asF32 = new LocalLoraBackend(model.config);
    asF32.add("a", roundedToBf16(loaded, false));
    const dtypes = (b: LocalLoraBackend) => new Set(b.packedSites().map((s) => s.weights.aPool.dtype));
    expect([...dtypes(asBf16)]).to.deep.equal(["bf16"]);
    expect([...dtypes(asF32)]).to.deep.equal(["f32"]);

    const half = await prefillLogits(model, asBf16, "a");
    const full = await prefillLogits(model, asF32, "a");
    expect(half.length).to.equal(5 * model.config.vocabSize);
    expect(Buffer.from(half.buffer).equals(Buffer.from(full.buffer))).to.equal(true);
    // And the adapter changed the logits (the comparison above is not of two base runs).
    const none = new LocalLoraBackend(model.config);
    const base = await prefillLogits(model, none, undefined);
    expect(Buffer.from(base.buffer).equals(Buffer.from(full.buffer))).to.equal(false);
  });
});
