import { expect } from "chai";
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AdapterError } from "@loramesh/errors";
import { f32Bytes, GOLDEN_DIR, writeSafetensors } from "@loramesh/testing";
import { adapterContentHash, adapterContentHashSync, inspectAdapter } from "./adapter-config";
import { siteShape } from "./lora-site";
import { loadModelConfig, parseModelConfig, UnsupportedModelError } from "./model-config";
import { SafetensorsError, SafetensorsFile } from "./safetensors";

const modelDir = (m: string): string => join(GOLDEN_DIR, "models", m);
const adapterDir = (m: string, a: string): string => join(GOLDEN_DIR, "adapters", m, a);

describe("formats: safetensors headers, model configs and PEFT adapters from headers only", function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "loramesh-formats-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const llama = loadModelConfig(modelDir("tiny-llama"));
  const good = join(modelDir("tiny-llama"), "model.safetensors");

  describe("safetensors reader", () => {
    const expectError = (path: string, pattern: RegExp) => {
      expect(() => SafetensorsFile.open(path).close()).to.throw(SafetensorsError, pattern);
    };

    it("reads F32, F16 and BF16 exactly", () => {
      const path = join(dir, "t.safetensors");
      writeSafetensors(path, {
        a: { dtype: "F32", shape: [2], data: f32Bytes(Float32Array.from([1.5, -2])) },
        h: { dtype: "F16", shape: [3], data: new Uint8Array(Uint16Array.from([0x3c00, 0xc000, 0x0001]).buffer) },
        b: { dtype: "BF16", shape: [2], data: new Uint8Array(Uint16Array.from([0x3f80, 0x4049]).buffer) },
      });
      const f = SafetensorsFile.open(path);
      expect([...f.readF32("a")]).to.deep.equal([1.5, -2]);
      expect([...f.readF32("h")]).to.deep.equal([1, -2, 2 ** -24]);
      expect([...f.readF32("b")]).to.deep.equal([1, 3.140625]);
      f.close();
    });

    it("refuses truncated files, lying headers and oversized headers", () => {
      const bytes = readFileSync(good);
      writeFileSync(join(dir, "short.safetensors"), bytes.subarray(0, 5));
      expectError(join(dir, "short.safetensors"), /truncated/);
      writeFileSync(join(dir, "cut.safetensors"), bytes.subarray(0, bytes.length - 100));
      expectError(join(dir, "cut.safetensors"), /truncated or lies/);
      const huge = Buffer.from(bytes);
      huge.writeBigUInt64LE(2n ** 40n, 0);
      writeFileSync(join(dir, "huge.safetensors"), huge);
      expectError(join(dir, "huge.safetensors"), /above the \d+-byte limit/);
      const beyond = Buffer.from(bytes);
      beyond.writeBigUInt64LE(BigInt(bytes.length), 0);
      writeFileSync(join(dir, "beyond.safetensors"), beyond);
      expectError(join(dir, "beyond.safetensors"), /truncated: its header claims/);
    });

    it("refuses bad JSON, unknown dtypes, wrong byte counts and overlapping tensors", () => {
      const write = (name: string, header: unknown, dataBytes = 16) => {
        const json = Buffer.from(typeof header === "string" ? header : JSON.stringify(header));
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(json.length));
        writeFileSync(join(dir, name), Buffer.concat([len, json, Buffer.alloc(dataBytes)]));
        return join(dir, name);
      };
      expectError(write("json.safetensors", "{not json"), /not valid JSON/);
      expectError(
        write("dtype.safetensors", { a: { dtype: "F8", shape: [1], data_offsets: [0, 1] } }),
        /unknown dtype/,
      );
      expectError(
        write("count.safetensors", { a: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }),
        /needs 12 bytes/,
      );
      expectError(
        write("shape.safetensors", { a: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }),
        /invalid shape/,
      );
      expectError(
        write("overlap.safetensors", {
          a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
          b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
        }),
        /overlap/,
      );
      const i64 = write("i64.safetensors", { a: { dtype: "I64", shape: [1], data_offsets: [0, 8] } });
      const f = SafetensorsFile.open(i64);
      expect(() => f.readF32("a")).to.throw(SafetensorsError, /must be one of F32, F16, BF16/);
      f.close();
    });
  });

  describe("model configs", () => {
    const base = JSON.parse(readFileSync(join(modelDir("tiny-llama"), "config.json"), "utf8")) as Record<
      string,
      unknown
    >;

    it("reads the older top-level rope_theta/rope_scaling as well as rope_parameters", () => {
      const old = { ...base };
      delete old["rope_parameters"];
      const older = parseModelConfig({
        ...old,
        rope_theta: 500000,
        rope_scaling: {
          type: "llama3",
          factor: 8,
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 8192,
        },
      });
      expect(older.rope).to.include({
        type: "llama3",
        base: 500000,
        factor: 8,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 8192,
      });
      const newer = parseModelConfig({
        ...base,
        rope_parameters: { rope_type: "yarn", rope_theta: 1e6, factor: 4, original_max_position_embeddings: 128 },
      });
      expect(newer.rope).to.include({ type: "yarn", base: 1e6, factor: 4 });
      expect(parseModelConfig(base).rope).to.include({ type: "default", base: 10000, rotaryDim: 16 });
    });

    it("knows qwen2 biases and sliding windows, mistral windows, tied embeddings and explicit head_dim", () => {
      const qwen = parseModelConfig({
        ...base,
        model_type: "qwen2",
        use_sliding_window: true,
        sliding_window: 64,
        max_window_layers: 2,
      });
      expect(qwen.attentionBias).to.equal(true);
      expect(qwen.slidingWindow).to.deep.equal([0, 0, 64]);
      expect(parseModelConfig({ ...base, model_type: "mistral", sliding_window: 32 }).slidingWindow).to.deep.equal([
        32, 32, 32,
      ]);
      expect(parseModelConfig({ ...base, tie_word_embeddings: true }).tieWordEmbeddings).to.equal(true);
      expect(parseModelConfig({ ...base, head_dim: 32 }).headDim).to.equal(32);
    });

    it("names what is supported when the model is not", () => {
      expect(() => parseModelConfig({ ...base, model_type: "gpt2" })).to.throw(
        UnsupportedModelError,
        /supported: llama, mistral, qwen2, mixtral/,
      );
      expect(() => parseModelConfig({ ...base, hidden_act: "gelu" })).to.throw(UnsupportedModelError, /hidden_act/);
      expect(() => parseModelConfig({ ...base, rope_parameters: { rope_type: "longrope", rope_theta: 1 } })).to.throw(
        UnsupportedModelError,
        /rope type "longrope"/,
      );
    });
  });

  describe("PEFT adapters from headers (inspectAdapter)", () => {
    const copyAdapter = (name = "sql-r8"): string => {
      const d = join(dir, "adapter");
      cpSync(adapterDir("tiny-llama", name), d, { recursive: true });
      return d;
    };
    const editConfig = (d: string, patch: Record<string, unknown>) => {
      const cfg = JSON.parse(readFileSync(join(d, "adapter_config.json"), "utf8")) as Record<string, unknown>;
      writeFileSync(join(d, "adapter_config.json"), JSON.stringify({ ...cfg, ...patch }));
    };

    it("returns rank, alpha, targets, per-module ranks and scales, and f32 bytes at true rank", () => {
      const a = inspectAdapter(adapterDir("tiny-llama", "pattern-r8"), llama);
      const mod = (name: string) => a.modules.find((m) => m.name === `model.layers.0.${name}`);
      expect(mod("mlp.down_proj")).to.include({ rank: 24, scale: 16 / 24 });
      expect(mod("self_attn.o_proj")).to.include({ rank: 2, scale: 8 });
      expect(a.rank).to.equal(24);
      const sql = inspectAdapter(adapterDir("tiny-llama", "sql-r8"), llama);
      const f = SafetensorsFile.open(join(adapterDir("tiny-llama", "sql-r8"), "adapter_model.safetensors"));
      const elements = [...f.entries.values()].reduce((s, e) => s + e.shape.reduce((x, y) => x * y, 1), 0);
      f.close();
      expect(sql.sizeBytes).to.equal(4 * elements);
      expect(sql.rank).to.equal(8);
      expect(sql.targetModules.length).to.be.greaterThan(0);
    });

    it("hashes config then weights, streamed and in one go alike", async () => {
      const a = inspectAdapter(adapterDir("tiny-llama", "sql-r8"), llama);
      const streamed = await adapterContentHash(a);
      expect(streamed).to.match(/^[0-9a-f]{64}$/);
      expect(streamed).to.equal(adapterContentHashSync(a));
    });

    it("refuses a dtype the loaders cannot convert, from the header alone", () => {
      const d = copyAdapter();
      const path = join(d, "adapter_model.safetensors");
      const f = SafetensorsFile.open(path);
      const tensors = Object.fromEntries(
        [...f.entries.values()].map((e, i) => [
          e.name,
          i === 0
            ? { dtype: "I32", shape: e.shape, data: new Uint8Array(4 * e.shape.reduce((x, y) => x * y, 1)) }
            : { dtype: e.dtype, shape: e.shape, data: f.readBytes(e) },
        ]),
      );
      f.close();
      writeSafetensors(path, tensors);
      expect(() => inspectAdapter(d, llama)).to.throw(AdapterError, /is I32; weights must be one of F32, F16, BF16/);
    });

    const refusals: Array<[string, Record<string, unknown>, RegExp]> = [
      ["DoRA", { use_dora: true }, /use_dora/],
      [
        "an unknown target",
        { target_modules: ["q_proj", "c_attn"] },
        /target_modules entry "c_attn" matches no module/,
      ],
      ["the lm_head", { target_modules: ["q_proj", "lm_head"] }, /lm_head, which loramesh does not put LoRA on/],
      ["a rank that does not fit the weights", { r: 16 }, /lora_A.weight has shape \[8, 64\]; r=16/],
      ["unexplained tensors", { target_modules: ["q_proj"] }, /tensors no target module explains/],
    ];
    for (const [what, patch, pattern] of refusals) {
      it(`refuses ${what} with the loader's message`, () => {
        const d = copyAdapter();
        editConfig(d, patch);
        expect(() => inspectAdapter(d, llama)).to.throw(AdapterError, pattern);
      });
    }

    it("refuses a truncated weights file from its header", () => {
      const d = copyAdapter();
      const path = join(d, "adapter_model.safetensors");
      const bytes = readFileSync(path);
      writeFileSync(path, bytes.subarray(0, bytes.length - 10));
      expect(statSync(path).size).to.equal(bytes.length - 10);
      expect(() => inspectAdapter(d, llama)).to.throw(AdapterError, /truncated or lies/);
    });

    it("gives each LoRA site's input and stacked output widths", () => {
      const q = llama.numHeads * llama.headDim;
      expect(siteShape(llama, "o")).to.deep.equal({ hIn: q, nOut: llama.hiddenSize });
      expect(siteShape(llama, "gate_up")).to.deep.equal({ hIn: llama.hiddenSize, nOut: 2 * llama.intermediateSize });
    });
  });
});
