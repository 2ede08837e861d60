/**
 * Mesh benchmark (not a test): on this machine, in one run,
 *  1. the per-site LoRA round trip from a worker to a LoRA server process over plain gRPC and over
 *     same-host shared memory, against the same computation in-process (coupled);
 *  2. generation throughput (tokens/s) of a coupled and a disaggregated cluster on the same model,
 *     adapters and requests.
 * With --json it prints one JSON object instead: the site round trip (p50/p99 µs, 8 rows: one
 * decode step of 8 sequences) in-process, over the shared-memory rings and over gRPC, and the decode
 * step with 8 sequences decoding at once (each sequence's decode time per token after its first,
 * median over the sequences) coupled, disaggregated over the rings and over gRPC, all in the same
 * run on the same model; and under "ucx" the cross-host figures (mesh-bench-ucx.ts): per-site round
 * trip over UCX (tcp) vs gRPC across a veth link between network namespaces, and the decode step of
 * a worker on another host over each (or why they were not measured: no root, no UCX).
 *
 *   pnpm bench:mesh [--requests N] [--tokens N] [--iterations N] [--json [--ucx-only]]
 */
import { hostname } from "node:os";
import { join } from "node:path";
import { BUNDLED_ADAPTERS, BUNDLED_MODEL, startLocalCluster, type LocalCluster } from "@loramesh/cli";
import { booleanOption, createLogger, intOption, loadConfig } from "@loramesh/core";
import { LocalLoraBackend, loadAdapter, Model, type LoraBackend } from "@loramesh/engine";
import { siteShape, type LoraSite } from "@loramesh/formats";
import { PlacementCache } from "@loramesh/mesh";
import { f32 } from "@loramesh/native";
import { LoraMeshClient } from "@loramesh/sdk";
import { RemoteLoraBackend } from "@loramesh/base-worker";
import { ADAPTERS, decodeStepMsOn, median, percentile, registerAdapters, round } from "./mesh-bench-common";
import { ucxReport } from "./mesh-bench-ucx";

const quiet = createLogger({ level: "error" });
process.env["LOG_LEVEL"] ??= "error";

const options = {
  requests: intOption({
    flag: "requests",
    default: 24,
    min: 1,
    description: "concurrent generation requests per cluster",
  }),
  tokens: intOption({ flag: "tokens", default: 64, min: 1, description: "tokens generated per request" }),
  iterations: intOption({ flag: "iterations", default: 400, min: 10, description: "round trips timed per case" }),
  json: booleanOption({ flag: "json", description: "print one JSON object (round trip and decode step figures)" }),
  ucxOnly: booleanOption({
    flag: "ucx-only",
    description: 'with --json: only the cross-host "ucx" entries (a quicker run)',
  }),
};

async function roundTrips(iterations: number): Promise<void> {
  const model = Model.load(BUNDLED_MODEL);
  const cluster = await startLocalCluster({
    routerListen: "127.0.0.1:0",
    modelDir: BUNDLED_MODEL,
    mode: "disaggregated",
    workers: 1,
    loraServers: 1,
    logger: quiet,
  });
  try {
    await registerAdapters(cluster.routerAddress);
    const provisioner = cluster.processes.find((p) => p.service === "provisioner")?.address as string;
    const placement = new PlacementCache(provisioner, quiet);
    await placement.ready;
    const ids = [...placement.holders.keys()].sort();
    const local = new LocalLoraBackend(model.config);
    for (const [i, name] of ADAPTERS.entries())
      local.add(
        ids.find((id) => id.includes(`.${name}.`)) ?? `x${i}`,
        loadAdapter(join(BUNDLED_ADAPTERS, name), model.config),
      );
    const backends: Array<[string, LoraBackend]> = [
      ["in-process (coupled)", local],
      [
        "gRPC",
        new RemoteLoraBackend({
          config: model.config,
          placement,
          workerId: "bench-grpc",
          hostId: hostname(),
          sharedMemory: false,
          logger: quiet,
        }),
      ],
      [
        "shared memory",
        new RemoteLoraBackend({
          config: model.config,
          placement,
          workerId: "bench-shm",
          hostId: hostname(),
          sharedMemory: true,
          logger: quiet,
        }),
      ],
    ];
    console.log(`\n## Per-site LoRA round trip (tiny-llama, ${ids.length} adapters, median of ${iterations})\n`);
    console.log(`| site | tokens | ${backends.map(([n]) => n).join(" µs | ")} µs | gRPC / shm |`);
    console.log(`|---|---|${backends.map(() => "---|").join("")}---|`);
    for (const site of ["qkv", "down"] as LoraSite[]) {
      for (const tokens of [1, 16, 256]) {
        const { hIn, nOut } = siteShape(model.config, site);
        const x = f32(
          [tokens, hIn],
          Float32Array.from({ length: tokens * hIn }, (_, i) => Math.sin(i)),
        );
        const rowAdapter = Int32Array.from({ length: tokens }, (_, t) => t % ids.length);
        const times: number[] = [];
        for (const [, backend] of backends) {
          const samples: number[] = [];
          for (let i = 0; i < iterations + 20; i++) {
            const y = f32([tokens, nOut]);
            const t0 = performance.now();
            await backend.apply({ layer: 1, site, x, y, adapters: ids, rowAdapter });
            if (i >= 20) samples.push((performance.now() - t0) * 1000);
          }
          times.push(median(samples));
        }
        console.log(
          `| ${site} | ${tokens} | ${times.map((t) => t.toFixed(0)).join(" | ")} | ${((times[1] as number) / (times[2] as number)).toFixed(2)}x |`,
        );
      }
    }
    for (const [, b] of backends) if (b instanceof RemoteLoraBackend) b.close();
    placement.close();
  } finally {
    await cluster.stop();
  }
}

async function throughput(
  mode: "coupled" | "disaggregated",
  requests: number,
  tokens: number,
): Promise<{ tokensPerSecond: number; seconds: number }> {
  const cluster = await startLocalCluster({
    routerListen: "127.0.0.1:0",
    modelDir: BUNDLED_MODEL,
    mode,
    workers: 1,
    loraServers: 1,
    logger: quiet,
  });
  try {
    await registerAdapters(cluster.routerAddress);
    const client = new LoraMeshClient({ address: cluster.routerAddress, defaultDeadlineMs: 600_000 });
    const run = () =>
      Promise.all(
        Array.from({ length: requests }, (_, i) =>
          client.complete({
            prompt: { $case: "text", value: `def forward(self, hidden_states): # request ${i}` },
            adapter: i % 7 === 6 ? "" : (ADAPTERS[i % 6] as string),
            sampling: {
              maxTokens: tokens,
              temperature: 0,
              topP: 1,
              topK: 0,
              stop: [],
              stopTokenIds: [],
              ignoreEos: true,
            },
          }),
        ),
      );
    await run(); // warm-up
    const t0 = performance.now();
    const results = await run();
    const seconds = (performance.now() - t0) / 1000;
    client.close();
    const generated = results.reduce((s, r) => s + r.tokenIds.length, 0);
    return { tokensPerSecond: generated / seconds, seconds };
  } finally {
    await cluster.stop();
  }
}

/** The three site backends of the round-trip figures, against one disaggregated cluster. */
async function siteBackends(
  cluster: LocalCluster,
): Promise<{ backends: Array<[string, LoraBackend]>; ids: string[]; close: () => void }> {
  const model = Model.load(BUNDLED_MODEL);
  const provisioner = cluster.processes.find((p) => p.service === "provisioner")?.address as string;
  const placement = new PlacementCache(provisioner, quiet);
  await placement.ready;
  const ids = [...placement.holders.keys()].sort();
  const local = new LocalLoraBackend(model.config);
  for (const [i, name] of ADAPTERS.entries())
    local.add(
      ids.find((id) => id.includes(`.${name}.`)) ?? `x${i}`,
      loadAdapter(join(BUNDLED_ADAPTERS, name), model.config),
    );
  const remote = (sharedMemory: boolean) =>
    new RemoteLoraBackend({
      config: model.config,
      placement,
      workerId: sharedMemory ? "bench-shm" : "bench-grpc",
      hostId: hostname(),
      sharedMemory,
      logger: quiet,
    });
  const backends: Array<[string, LoraBackend]> = [
    ["in_process", local],
    ["shm", remote(true)],
    ["grpc", remote(false)],
  ];
  return {
    backends,
    ids,
    close: () => {
      for (const [, b] of backends) if (b instanceof RemoteLoraBackend) b.close();
      placement.close();
    },
  };
}

/** p50/p99 µs of one qkv site of `rows` rows (every row with an adapter) per backend. */
async function siteRoundTripUs(
  iterations: number,
  rows: number,
): Promise<Record<string, { p50: number; p99: number }>> {
  const model = Model.load(BUNDLED_MODEL);
  const cluster = await startLocalCluster({
    routerListen: "127.0.0.1:0",
    modelDir: BUNDLED_MODEL,
    mode: "disaggregated",
    workers: 1,
    loraServers: 1,
    logger: quiet,
    startTimeoutMs: 180_000,
  });
  try {
    await registerAdapters(cluster.routerAddress);
    const { backends, ids, close } = await siteBackends(cluster);
    const { hIn, nOut } = siteShape(model.config, "qkv");
    const x = f32(
      [rows, hIn],
      Float32Array.from({ length: rows * hIn }, (_, i) => Math.sin(i)),
    );
    const rowAdapter = Int32Array.from({ length: rows }, (_, t) => t % ids.length);
    const out: Record<string, { p50: number; p99: number }> = {};
    for (const [name, backend] of backends) {
      const samples: number[] = [];
      for (let i = 0; i < iterations + 50; i++) {
        const y = f32([rows, nOut]);
        const t0 = performance.now();
        await backend.apply({ layer: 1, site: "qkv", x, y, adapters: ids, rowAdapter });
        if (i >= 50) samples.push((performance.now() - t0) * 1000);
      }
      out[name] = { p50: round(percentile(samples, 50)), p99: round(percentile(samples, 99)) };
    }
    close();
    return out;
  } finally {
    await cluster.stop();
  }
}

/** Decode step time with `sequences` sequences decoding at once: median over the sequences. */
async function decodeStepMs(
  mode: "coupled" | "disaggregated",
  sharedMemory: boolean,
  sequences: number,
  tokens: number,
): Promise<number> {
  const cluster = await startLocalCluster({
    routerListen: "127.0.0.1:0",
    modelDir: BUNDLED_MODEL,
    mode,
    workers: 1,
    loraServers: 1,
    logger: quiet,
    startTimeoutMs: 180_000,
    extraArgs: { "base-worker": [`--shared-memory=${sharedMemory}`] },
  });
  try {
    await registerAdapters(cluster.routerAddress);
    return await decodeStepMsOn(cluster.routerAddress, sequences, tokens);
  } finally {
    await cluster.stop();
  }
}

async function jsonReport(iterations: number, tokens: number): Promise<void> {
  const siteUs = await siteRoundTripUs(iterations, 8);
  const coupled = await decodeStepMs("coupled", true, 8, tokens);
  const shm = await decodeStepMs("disaggregated", true, 8, tokens);
  const grpc = await decodeStepMs("disaggregated", false, 8, tokens);
  const ucx = await ucxReport(iterations, tokens);
  const os = await import("node:os");
  console.log(
    JSON.stringify({
      site_round_trip_us: siteUs,
      decode_step_ms: { coupled, disaggregated_shm: shm, disaggregated_grpc: grpc },
      model: "tiny-llama (bundled), 6 adapters (r4-r64)",
      site: "qkv, 8 rows, layer 1",
      sequences: 8,
      ucx,
      machine: `${os.hostname()}, ${os.cpus().length} cores, node ${process.version}`,
    }),
  );
}

async function main(): Promise<void> {
  const { config } = loadConfig(options, process.argv.slice(2));
  if (config.json && config.ucxOnly)
    return console.log(JSON.stringify({ ucx: await ucxReport(config.iterations, config.tokens) }));
  if (config.json) return jsonReport(config.iterations, config.tokens);
  console.log(
    `# loramesh mesh benchmark — ${hostname()}, ${(await import("node:os")).cpus().length} cores, node ${process.version}`,
  );
  await roundTrips(config.iterations);
  console.log(
    `\n## Generation throughput (tiny-llama, 1 worker, ${config.requests} concurrent requests × ${config.tokens} tokens, 6 adapters + base)\n`,
  );
  console.log("| mode | tokens/s | wall s |");
  console.log("|---|---|---|");
  for (const mode of ["coupled", "disaggregated"] as const) {
    const r = await throughput(mode, config.requests, config.tokens);
    console.log(`| ${mode} | ${r.tokensPerSecond.toFixed(0)} | ${r.seconds.toFixed(2)} |`);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
