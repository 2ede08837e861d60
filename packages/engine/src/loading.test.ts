import { expect } from "chai";
import { copyFileSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AdapterError } from "@loramesh/errors";
import { loadAdapter } from "./adapter";
import { Checkpoint } from "./checkpoint";
import { Engine } from "./engine";
import { Model } from "./model";
import { inspectAdapter, loadModelConfig, SafetensorsError, SafetensorsFile } from "@loramesh/formats";
import { writeSafetensors } from "@loramesh/testing";
import { adapterDir, modelDir } from "./test-fixtures";

describe("loading: checkpoints and PEFT adapters with their weights", function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "loramesh-load-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const llama = loadModelConfig(modelDir("tiny-llama"));
  const good = join(modelDir("tiny-llama"), "model.safetensors");

  describe("checkpoints", () => {
    it("loads a sharded checkpoint through model.safetensors.index.json to the same logits", async () => {
      const src = SafetensorsFile.open(good);
      const names = [...src.entries.keys()];
      const half = Math.floor(names.length / 2);
      const shard = (part: string[]) =>
        Object.fromEntries(
          part.map((n) => [n, { dtype: "F32", shape: src.entry(n).shape, data: src.readBytes(src.entry(n)) }]),
        );
      writeSafetensors(join(dir, "model-00001-of-00002.safetensors"), shard(names.slice(0, half)));
      writeSafetensors(join(dir, "model-00002-of-00002.safetensors"), shard(names.slice(half)));
      src.close();
      const weightMap = Object.fromEntries(
        names.map((n, i) => [n, i < half ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors"]),
      );
      writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
      for (const f of ["config.json", "tokenizer.json", "tokenizer_config.json"])
        copyFileSync(join(modelDir("tiny-llama"), f), join(dir, f));
      const ids = [1, 290, 73, 360];
      const a = await Engine.load(dir).score(ids);
      const b = await Engine.load(modelDir("tiny-llama")).score(ids);
      expect(a.map((r) => [...r])).to.deep.equal(b.map((r) => [...r]));
    });

    it("refuses pickle-only checkpoints and shard indexes that point outside the directory", () => {
      writeFileSync(join(dir, "pytorch_model.bin"), "x");
      expect(() => Checkpoint.open(dir)).to.throw(SafetensorsError, /pickle/);
      writeFileSync(
        join(dir, "model.safetensors.index.json"),
        JSON.stringify({ weight_map: { w: "../evil.safetensors" } }),
      );
      expect(() => Checkpoint.open(dir)).to.throw(SafetensorsError, /not a .safetensors file in/);
    });

    it("refuses weights whose shapes do not match the config", () => {
      cpSync(modelDir("tiny-llama"), dir, { recursive: true });
      const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
      writeFileSync(join(dir, "config.json"), JSON.stringify({ ...cfg, intermediate_size: 128 }));
      expect(() => Model.load(dir)).to.throw(
        SafetensorsError,
        /mlp.gate_proj.weight has shape \[160, 64\], the config implies \[128, 64\]/,
      );
    });
  });

  describe("PEFT adapters", () => {
    const copyAdapter = (name = "sql-r8"): string => {
      const d = join(dir, "adapter");
      cpSync(adapterDir("tiny-llama", name), d, { recursive: true });
      return d;
    };
    const editConfig = (d: string, patch: Record<string, unknown>) => {
      const cfg = JSON.parse(readFileSync(join(d, "adapter_config.json"), "utf8")) as Record<string, unknown>;
      writeFileSync(join(d, "adapter_config.json"), JSON.stringify({ ...cfg, ...patch }));
    };

    it("reads exactly what inspectAdapter validated from the headers (the provisioner's view)", () => {
      for (const name of ["sql-r8", "pattern-r8", "rslora-r32", "math-r4-mlp"]) {
        const dirOf = adapterDir("tiny-llama", name);
        const seen = inspectAdapter(dirOf, llama);
        const loaded = loadAdapter(dirOf, llama);
        expect({
          rank: seen.rank,
          alpha: seen.alpha,
          targets: seen.targetModules,
          bytes: seen.sizeBytes,
        }).to.deep.equal({
          rank: loaded.rank,
          alpha: loaded.alpha,
          targets: loaded.targetModules,
          bytes: loaded.sizeBytes,
        });
        expect(loaded.sizeBytes).to.equal(loaded.modules.reduce((s, m) => s + 4 * (m.a.length + m.b.length), 0));
      }
    });

    it("applies rank_pattern, alpha_pattern and rsLoRA scaling", () => {
      const pattern = loadAdapter(adapterDir("tiny-llama", "pattern-r8"), llama);
      const mod = (name: string) => pattern.modules.find((m) => m.name === `model.layers.0.${name}`);
      expect(mod("mlp.down_proj")).to.include({ rank: 24, scale: 16 / 24 });
      expect(mod("self_attn.o_proj")).to.include({ rank: 2, scale: 8 });
      expect(mod("mlp.up_proj")).to.include({ rank: 8, scale: 4 / 8 });
      expect(mod("self_attn.q_proj")).to.include({ rank: 8, scale: 2 });
      const rs = loadAdapter(adapterDir("tiny-llama", "rslora-r32"), llama);
      expect(rs.modules[0]?.scale).to.be.closeTo(16 / Math.sqrt(32), 1e-12);
      expect(rs.contentHash).to.match(/^[0-9a-f]{64}$/);
    });

    it("honours layers_to_transform, layers_pattern and regex target_modules", () => {
      const d = copyAdapter();
      // Keep only layer 1's tensors, as PEFT would have saved them.
      const f = SafetensorsFile.open(join(d, "adapter_model.safetensors"));
      const keep = Object.fromEntries(
        [...f.entries.values()]
          .filter((e) => e.name.includes(".layers.1."))
          .map((e) => [e.name, { dtype: e.dtype, shape: e.shape, data: f.readBytes(e) }]),
      );
      f.close();
      writeSafetensors(join(d, "adapter_model.safetensors"), keep);
      editConfig(d, { layers_to_transform: [1], layers_pattern: "layers" });
      const a = loadAdapter(d, llama);
      expect(new Set(a.modules.map((m) => m.layer))).to.deep.equal(new Set([1]));
      editConfig(d, {
        layers_to_transform: null,
        layers_pattern: null,
        target_modules: ".*\\.1\\.self_attn\\.(q|v)_proj",
      });
      expect(loadAdapter(d, llama).modules.map((m) => m.name)).to.deep.equal([
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
      ]);
    });

    const refusals: Array<[string, Record<string, unknown>, RegExp]> = [
      ["DoRA", { use_dora: true }, /use_dora/],
      ["a bias", { bias: "all" }, /bias "all"/],
      ["modules_to_save", { modules_to_save: ["lm_head"] }, /modules_to_save/],
      [
        "an unknown target",
        { target_modules: ["q_proj", "c_attn"] },
        /target_modules entry "c_attn" matches no module/,
      ],
      [
        "the lm_head",
        { target_modules: ["q_proj", "v_proj", "lm_head"] },
        /lm_head, which loramesh does not put LoRA on/,
      ],
      ["another PEFT method", { peft_type: "IA3" }, /peft_type "IA3"/],
      ["a rank that does not fit the weights", { r: 16 }, /lora_A.weight has shape \[8, 64\]; r=16/],
    ];
    for (const [what, patch, pattern] of refusals) {
      it(`refuses ${what}, naming the field`, () => {
        const d = copyAdapter();
        editConfig(d, patch);
        expect(() => loadAdapter(d, llama)).to.throw(AdapterError, pattern);
      });
    }

    it("refuses pickle weights, missing tensors, unexplained tensors and corrupt files", () => {
      const d = copyAdapter();
      const weights = join(d, "adapter_model.safetensors");
      const bytes = readFileSync(weights);
      unlinkSync(weights);
      writeFileSync(join(d, "adapter_model.bin"), "pickle");
      expect(() => loadAdapter(d, llama)).to.throw(AdapterError, /adapter_model.bin is a pickle file/);
      writeFileSync(weights, bytes.subarray(0, bytes.length - 10));
      expect(() => loadAdapter(d, llama)).to.throw(AdapterError, /truncated or lies/);
      writeFileSync(weights, bytes);
      editConfig(d, { target_modules: ["q_proj", "v_proj", "k_proj"] });
      expect(() => loadAdapter(d, llama)).to.throw(
        AdapterError,
        /has no base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight/,
      );
      editConfig(d, { target_modules: ["q_proj"] });
      expect(() => loadAdapter(d, llama)).to.throw(AdapterError, /tensors no target module explains/);
    });

    it("refuses an adapter whose shapes fit another base model", () => {
      const mixtral = loadModelConfig(modelDir("tiny-mixtral"));
      expect(() => loadAdapter(adapterDir("tiny-llama", "math-r4-mlp"), mixtral)).to.throw(
        AdapterError,
        /matches no module/,
      );
      const wider = { ...llama, hiddenSize: 128 };
      expect(() => loadAdapter(adapterDir("tiny-llama", "sql-r8"), wider)).to.throw(AdapterError, /needs \[8, 128\]/);
    });
  });
});
