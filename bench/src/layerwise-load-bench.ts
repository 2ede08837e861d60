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
 * synthetic llama with TinyLlama's proportions (`synthModel`: random bf16 weights) and a rank-r bf16
 * adapter on all seven projections of every layer to a temporary directory.
 */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { cpus, hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { LORA_TARGETS, shapeByName, startLocalCluster, synthModel, type SynthShape } from "@loramesh/cli";
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

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

/** A llama with TinyLlama's proportions, `layers` deep and `hidden` wide. */
function benchShape(layers: number, hidden: number): SynthShape {
  return {
    ...shapeByName("llama-tiny"),
    name: `llama-${layers}x${hidden}`,
    hiddenSize: hidden,
    intermediateSize: Math.round((hidden * 2.75) / 32) * 32,
    numLayers: layers,
    numHeads: hidden / 32,
    numKvHeads: hidden / 128,
  };
}

async function coldTtft(modelDir: string, adapterDir: string, layerwise: boolean, trials: number): Promise<number[]> {
  const cluster = await startLocalCluster({
    routerListen: "127.0.0.1:0",
    modelDir,
    mode: "disaggregated",
    workers: 1,
    loraServers: 1,
    logger: quiet,
    // The machine may be busy with other work; a slow start is not what is measured.
    startTimeoutMs: 300_000,
    env: { ...process.env, LORAMESH_LAYERWISE_LOADING: String(layerwise), ADAPTER_WAIT_MS: "60000" },
  });
  const client = new LoraMeshClient({ address: cluster.routerAddress, defaultDeadlineMs: 600_000 });
  const prompt = Array.from({ length: 32 }, (_, i) => 3 + ((i * 37) % 500)); // within every shape's vocabulary
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
  const shape = benchShape(config.layers, config.hidden);
  const root = mkdtempSync(join(tmpdir(), "lm-layerwise-bench-"));
  try {
    synthModel(root, {
      shape,
      dtype: "bf16",
      adapters: [{ name: "cold", rank: config.rank, targets: LORA_TARGETS }],
      gguf: [],
    });
    const [modelDir, adapterDir] = [join(root, "model"), join(root, "adapters", "cold")];
    const whole = await coldTtft(modelDir, adapterDir, false, config.trials);
    const layerwise = await coldTtft(modelDir, adapterDir, true, config.trials);
    const adapterMiB = statSync(join(adapterDir, "adapter_model.safetensors")).size / 2 ** 20;
    const result = {
      host: hostname(),
      cores: cpus().length,
      node: process.version,
      model: { layers: shape.numLayers, hidden: shape.hiddenSize, dtype: "bf16" },
      adapterRank: config.rank,
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
      `# synthetic llama: ${shape.numLayers} layers, hidden ${shape.hiddenSize}, bf16; adapter rank ${config.rank} on 7 projections, ${result.adapterMiB} MiB\n`,
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
