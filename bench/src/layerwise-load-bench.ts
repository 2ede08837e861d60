/**
 * Layer-wise loading benchmark (not a test): time to first token of the first request to a cold
 * adapter, through a real disaggregated mesh, with the LoRA server loading adapters layer by layer
 * (`--layerwise-loading`, the default) and whole (`--layerwise-loading=false`). Each trial registers
 * a new adapter name (so the LoRA server reads it from storage) and sends one request at once; the
 * router holds it until an executor reports the adapter, then the worker's site calls wait on the
 * LoRA server only for the layers not yet resident.
 *
 *   pnpm bench:layerwise-load [--json] [--trials N] [--layers N] [--hidden N] [--rank N]
 *
 * The bundled models are too small for a load to take measurable time, so the bench writes a
 * synthetic llama (random bf16 weights, the bundled tokenizer) and a rank-r bf16 adapter on all seven
 * projections of every layer to a temporary directory.
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { BUNDLED_MODEL, startLocalCluster } from "@loramesh/cli";
import { booleanOption, createLogger, intOption, loadConfig } from "@loramesh/core";
import { LoraMeshClient } from "@loramesh/sdk";

const quiet = createLogger({ level: "error" });
process.env["LOG_LEVEL"] ??= "error";

const options = {
  json: booleanOption({ flag: "json", default: false, description: "print one JSON object instead of a table" }),
  trials: intOption({ flag: "trials", default: 5, min: 1, description: "cold adapters per mode" }),
  layers: intOption({ flag: "layers", default: 16, min: 1, description: "layers of the synthetic model" }),
  hidden: intOption({ flag: "hidden", default: 512, min: 64, description: "hidden size of the synthetic model" }),
  rank: intOption({ flag: "rank", default: 64, min: 1, description: "LoRA rank of the synthetic adapter" }),
};

type Tensors = Record<string, { shape: number[]; data: Uint8Array }>;

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

/** Random bf16 values in ±scale from a fixed seed. */
function bf16(shape: number[], scale: number, seed: number): { shape: number[]; data: Uint8Array } {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Uint16Array(n);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    f[0] = ((x >>> 0) / 4294967296 - 0.5) * 2 * scale;
    out[i] = (u[0] as number) >>> 16;
  }
  return { shape, data: new Uint8Array(out.buffer) };
}

function writeSafetensors(path: string, tensors: Tensors): void {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: "BF16", shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([length, json, ...Object.values(tensors).map((t) => Buffer.from(t.data))]));
}

interface Shape {
  layers: number;
  hidden: number;
  intermediate: number;
  rank: number;
}

const PROJECTIONS = (s: Shape): Record<string, { module: string; inF: number; outF: number }> => ({
  q_proj: { module: "self_attn", inF: s.hidden, outF: s.hidden },
  k_proj: { module: "self_attn", inF: s.hidden, outF: s.hidden },
  v_proj: { module: "self_attn", inF: s.hidden, outF: s.hidden },
  o_proj: { module: "self_attn", inF: s.hidden, outF: s.hidden },
  gate_proj: { module: "mlp", inF: s.hidden, outF: s.intermediate },
  up_proj: { module: "mlp", inF: s.hidden, outF: s.intermediate },
  down_proj: { module: "mlp", inF: s.intermediate, outF: s.hidden },
});

function writeModel(dir: string, s: Shape): void {
  mkdirSync(dir, { recursive: true });
  for (const f of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"])
    copyFileSync(join(BUNDLED_MODEL, f), join(dir, f));
  const heads = s.hidden / 64;
  const config = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: s.hidden,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: heads,
    num_key_value_heads: heads,
    head_dim: 64,
    vocab_size: 512,
    max_position_embeddings: 512,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 2,
    hidden_act: "silu",
    dtype: "bfloat16",
  };
  writeFileSync(join(dir, "config.json"), JSON.stringify(config, null, 2));
  const t: Tensors = { "model.embed_tokens.weight": bf16([512, s.hidden], 0.5, 1) };
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}`;
    t[`${p}.input_layernorm.weight`] = bf16([s.hidden], 0.1, 10 + l);
    t[`${p}.post_attention_layernorm.weight`] = bf16([s.hidden], 0.1, 20 + l);
    for (const [name, proj] of Object.entries(PROJECTIONS(s)))
      t[`${p}.${proj.module}.${name}.weight`] = bf16([proj.outF, proj.inF], 0.05, 1000 * l + name.length);
  }
  t["model.norm.weight"] = bf16([s.hidden], 0.1, 3);
  t["lm_head.weight"] = bf16([512, s.hidden], 0.05, 4);
  writeSafetensors(join(dir, "model.safetensors"), t);
}

function writeAdapter(dir: string, s: Shape): void {
  mkdirSync(dir, { recursive: true });
  const projections = PROJECTIONS(s);
  writeFileSync(
    join(dir, "adapter_config.json"),
    JSON.stringify({
      peft_type: "LORA",
      r: s.rank,
      lora_alpha: 2 * s.rank,
      target_modules: Object.keys(projections),
      bias: "none",
      use_dora: false,
      use_rslora: false,
      fan_in_fan_out: false,
      modules_to_save: null,
      base_model_name_or_path: "synthetic-llama",
    }),
  );
  const t: Tensors = {};
  for (let l = 0; l < s.layers; l++)
    for (const [name, proj] of Object.entries(projections)) {
      const key = `base_model.model.model.layers.${l}.${proj.module}.${name}`;
      t[`${key}.lora_A.weight`] = bf16([s.rank, proj.inF], 0.05, 7000 + 100 * l + name.length);
      t[`${key}.lora_B.weight`] = bf16([proj.outF, s.rank], 0.05, 9000 + 100 * l + name.length);
    }
  writeSafetensors(join(dir, "adapter_model.safetensors"), t);
}

async function coldTtft(modelDir: string, adapterDir: string, layerwise: boolean, trials: number): Promise<number[]> {
  const cluster = await startLocalCluster({
    routerListen: "127.0.0.1:0",
    modelDir,
    mode: "disaggregated",
    workers: 1,
    loraServers: 1,
    logger: quiet,
    env: { ...process.env, LORAMESH_LAYERWISE_LOADING: String(layerwise), ADAPTER_WAIT_MS: "60000" },
  });
  const client = new LoraMeshClient({ address: cluster.routerAddress, defaultDeadlineMs: 600_000 });
  const prompt = Array.from({ length: 32 }, (_, i) => 3 + ((i * 37) % 500));
  const generate = async (adapter: string): Promise<number> => {
    const t0 = performance.now();
    const stream = client.generate({
      prompt: { $case: "tokenIds", value: { ids: [1, ...prompt] } },
      adapter,
      sampling: { maxTokens: 2, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true },
    });
    let first: number | undefined;
    for await (const d of stream) if (first === undefined && d.tokenIds.length > 0) first = performance.now();
    return (first ?? performance.now()) - t0;
  };
  try {
    await generate(""); // warm-up: connections and the base model's pages
    const samples: number[] = [];
    for (let t = 0; t < trials; t++) {
      const name = `cold-${layerwise ? "lw" : "whole"}-${t}`;
      await client.registerAdapter(name, adapterDir);
      samples.push(await generate(name));
    }
    return samples;
  } finally {
    client.close();
    await cluster.stop();
  }
}

async function main(): Promise<void> {
  const { config } = loadConfig(options, process.argv.slice(2));
  const shape: Shape = {
    layers: config.layers,
    hidden: config.hidden,
    intermediate: Math.round((config.hidden * 8) / 3 / 32) * 32,
    rank: config.rank,
  };
  const root = mkdtempSync(join(tmpdir(), "lm-layerwise-bench-"));
  try {
    writeModel(join(root, "model"), shape);
    writeAdapter(join(root, "adapter"), shape);
    const whole = await coldTtft(join(root, "model"), join(root, "adapter"), false, config.trials);
    const layerwise = await coldTtft(join(root, "model"), join(root, "adapter"), true, config.trials);
    const adapterMiB =
      (shape.layers * Object.values(PROJECTIONS(shape)).reduce((n, p) => n + shape.rank * (p.inF + p.outF), 0) * 2) /
      2 ** 20;
    const result = {
      host: hostname(),
      cores: cpus().length,
      node: process.version,
      model: { ...shape, dtype: "bf16" },
      adapterMiB: Number(adapterMiB.toFixed(1)),
      trials: config.trials,
      wholeMs: median(whole),
      layerwiseMs: median(layerwise),
      samples: { whole, layerwise },
    };
    if (config.json) {
      process.stdout.write(`${JSON.stringify(result)}\n`);
      return;
    }
    console.log(
      `# layer-wise loading: TTFT of the first request to a cold adapter (median of ${config.trials}) — ${result.host}, ${result.cores} cores`,
    );
    console.log(
      `# synthetic llama: ${shape.layers} layers, hidden ${shape.hidden}, bf16; adapter rank ${shape.rank} on 7 projections, ${result.adapterMiB} MiB\n`,
    );
    console.log("| LoRA server loads | TTFT ms (median) | samples ms |");
    console.log("|---|---|---|");
    console.log(`| whole adapter | ${result.wholeMs.toFixed(0)} | ${whole.map((x) => x.toFixed(0)).join(", ")} |`);
    console.log(
      `| layer by layer | ${result.layerwiseMs.toFixed(0)} | ${layerwise.map((x) => x.toFixed(0)).join(", ")} |`,
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
