import { expect } from "chai";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine, LocalLoraBackend, Model, loadAdapter } from "@loramesh/engine";
import { Tokenizer } from "@loramesh/formats";
import { toF16Bits } from "./random-weights";
import { SHAPES } from "./shapes";
import { LORA_TARGETS, permuteRows, synthModel } from "./synth-model";

describe("synth-model: real-shaped checkpoints with random weights", function () {
  this.timeout(120_000);
  const shape = SHAPES["llama-tiny"]!;
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "loramesh-synth-"));
    const adapters = [{ name: "r8", rank: 8, targets: LORA_TARGETS }];
    synthModel(join(dir, "bf16"), { shape, dtype: "bf16", adapters, gguf: ["F16"] });
    synthModel(join(dir, "f32"), { shape, dtype: "f32", adapters, gguf: [] });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("holds bf16 weights as bf16 in place, and gives the f32 checkpoint's logits bit for bit", async () => {
    const bf = Model.load(join(dir, "bf16", "model"));
    const fp = Model.load(join(dir, "f32", "model"));
    expect(bf.layers[0]?.qkv.dtype).to.equal("bf16");
    expect(fp.layers[0]?.qkv.dtype).to.equal("f32");
    // Weights are the file's bytes (nothing widened): held bytes are the checkpoint's tensor bytes.
    expect(bf.sizeBytes).to.be.closeTo(statSync(join(dir, "bf16", "model", "model.safetensors")).size, 4096);
    const ids = [1, 300, 301, 500, 17, 900];
    const logits = async (m: Model) => new Engine(m, Tokenizer.load(m.dir, m.config.eosTokenIds)).score(ids);
    const [a, b] = [await logits(bf), await logits(fp)];
    a.forEach((row, i) =>
      expect(Buffer.from(row.buffer).equals(Buffer.from((b[i] as Float32Array).buffer))).to.equal(true),
    );
  });

  it("writes PEFT adapters the engine loads, and GGUF files with llama.cpp's header", () => {
    const m = Model.load(join(dir, "bf16", "model"));
    const adapter = loadAdapter(join(dir, "bf16", "adapters", "r8"), m.config);
    expect(adapter.rank).to.equal(8);
    expect(adapter.modules).to.have.length(shape.numLayers * 7);
    const lora = new LocalLoraBackend(m.config);
    lora.add("r8", adapter);
    const gguf = readFileSync(join(dir, "bf16", "model-F16.gguf"));
    expect(gguf.subarray(0, 4).toString("ascii")).to.equal("GGUF");
    expect(gguf.readUInt32LE(4)).to.equal(3);
    expect(Number(gguf.readBigUInt64LE(8))).to.equal(3 + 9 * shape.numLayers);
    const lg = readFileSync(join(dir, "bf16", "adapters", "r8-F16.gguf"));
    expect(Number(lg.readBigUInt64LE(8))).to.equal(2 * 7 * shape.numLayers);
  });

  it("permutes q/k rows as llama.cpp's converter does (rotate-half pairs to interleaved)", () => {
    // One head of dim 4, one column: rows [x0, x1, x2, x3] -> [x0, x2, x1, x3].
    const out = permuteRows(Float32Array.from([10, 11, 12, 13]), 4, 1, 1);
    expect(Array.from(out)).to.deep.equal([10, 12, 11, 13]);
  });

  it("converts to f16 with round-to-nearest-even, subnormals and overflow", () => {
    const bits = toF16Bits(Float32Array.from([1, -2, 65504, 1e6, 6e-8, 0.1]));
    expect(Array.from(bits)).to.deep.equal([0x3c00, 0xc000, 0x7bff, 0x7c00, 0x0001, 0x2e66]);
  });
});
