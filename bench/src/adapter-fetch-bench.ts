/**
 * Adapter fetch benchmark (not a test): how long an executor takes to have an adapter's files ready
 * (in its host cache, content hash verified) from its source (the hub's HTTP layout, or S3) versus
 * streamed from a peer executor over `AdapterPeerService.FetchAdapter`, and from a cache hit.
 * The servers (hub, S3, peer) run in a child process on 127.0.0.1, the fetching side in this one;
 * every fetch goes into a fresh cache directory. The weights are random bytes of the given sizes:
 * the fetch path hashes them but does not parse them, and loading into the pool afterwards costs
 * the same whichever way the files came.
 *
 *   pnpm bench:adapter-fetch [--sizes-mib 8,64,256] [--repeats 3]
 */
import { fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger, intOption, loadConfig, startGrpcServer, stringOption } from "@loramesh/core";
import { adapterPeerService, fetchFromPeer } from "@loramesh/mesh";
import { AdapterCache, fetchAdapter, PEFT_CONFIG, PEFT_WEIGHTS } from "@loramesh/sources";
import { GOLDEN_DIR, startAdapterFileServer, startTestS3Server } from "@loramesh/testing";

const MiB = 1024 * 1024;

interface Served {
  hub: string;
  s3: string;
  s3Key: string;
  s3Secret: string;
  peer: string;
  /** Content hash per size. */
  hashes: Record<string, string>;
}

/** Child: writes the adapters, serves them by hub layout, S3 and peer gRPC, reports the addresses. */
async function serve(sizes: number[]): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), "lm-fetch-bench-src-"));
  const config = readFileSync(join(GOLDEN_DIR, "adapters", "tiny-llama", "sql-r8", PEFT_CONFIG));
  const hub = await startAdapterFileServer();
  const s3 = await startTestS3Server();
  const cache = new AdapterCache({ root: join(root, "cache"), limitBytes: 64 * 1024 * MiB });
  const hashes: Record<string, string> = {};
  const objects = new Map<string, Buffer>();
  for (const size of sizes) {
    const weights = randomBytes(size * MiB);
    const files = new Map([
      [PEFT_CONFIG, config],
      [PEFT_WEIGHTS, weights],
    ]);
    hub.hub.set(`bench/a${size}`, new Map([["main", files]]));
    for (const [f, b] of files) objects.set(`a${size}/${f}`, b);
    const dir = join(root, `a${size}`);
    mkdirSync(dir);
    for (const [f, b] of files) writeFileSync(join(dir, f), b);
    const cached = await cache.ingest(async (sink) => {
      for (const [f, b] of files) await sink.file(f, [b], b.length);
    });
    hashes[String(size)] = cached.contentHash;
  }
  s3.buckets.set("bench", objects);
  const peer = await startGrpcServer({
    address: "127.0.0.1:0",
    services: [adapterPeerService((_id, hash) => cache.lookup(hash), createLogger({ level: "error" }))],
    logger: createLogger({ level: "error" }),
  });
  const served: Served = {
    hub: hub.url,
    s3: s3.endpoint,
    s3Key: s3.accessKeyId,
    s3Secret: s3.secretAccessKey,
    peer: peer.address,
    hashes,
  };
  process.send?.(served);
  process.once("disconnect", () => {
    rmSync(root, { recursive: true, force: true });
    process.exit(0);
  });
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

async function timed(run: (cache: AdapterCache) => Promise<unknown>, repeats: number): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const root = mkdtempSync(join(tmpdir(), "lm-fetch-bench-"));
    try {
      const cache = new AdapterCache({ root, limitBytes: 64 * 1024 * MiB });
      const t0 = performance.now();
      await run(cache);
      ms.push(performance.now() - t0);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }
  return median(ms);
}

async function main(): Promise<void> {
  const { config } = loadConfig(
    {
      sizesMiB: stringOption({ flag: "sizes-mib", default: "8,64,256", description: "adapter weight sizes in MiB" }),
      repeats: intOption({ flag: "repeats", default: 3, min: 1, description: "fetches per case (median)" }),
    },
    process.argv.slice(2),
  );
  const sizes = config.sizesMiB.split(",").map(Number);
  const child = fork(__filename, ["--serve", config.sizesMiB], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const served = await new Promise<Served>((resolve) => child.once("message", (m) => resolve(m as Served)));
  const env = {
    HF_ENDPOINT: served.hub,
    AWS_ENDPOINT_URL: served.s3,
    AWS_REGION: "us-east-1",
    AWS_ACCESS_KEY_ID: served.s3Key,
    AWS_SECRET_ACCESS_KEY: served.s3Secret,
  };
  const rows: string[] = [
    "| weights | hub HTTP (source) | S3 (source) | peer gRPC stream | cache hit | source / peer |",
    "|---|---|---|---|---|---|",
  ];
  try {
    for (const size of sizes) {
      const hash = served.hashes[String(size)] as string;
      const hubMs = await timed(
        (cache) => fetchAdapter(`hf://bench/a${size}`, { cache, env, expectedHash: hash }),
        config.repeats,
      );
      const s3Ms = await timed(
        (cache) => fetchAdapter(`s3://bench/a${size}`, { cache, env, expectedHash: hash }),
        config.repeats,
      );
      const peerMs = await timed((cache) => fetchFromPeer(served.peer, "bench", hash, cache), config.repeats);
      const fmt = (ms: number): string =>
        `${ms.toFixed(0)} ms (${((size * MiB) / MiB / (ms / 1000)).toFixed(0)} MiB/s)`;
      const hit = await (async () => {
        const root = mkdtempSync(join(tmpdir(), "lm-fetch-bench-"));
        try {
          const cache = new AdapterCache({ root, limitBytes: 64 * 1024 * MiB });
          await fetchFromPeer(served.peer, "bench", hash, cache);
          const t0 = performance.now();
          await fetchAdapter(`hf://bench/a${size}`, { cache, env, expectedHash: hash });
          return performance.now() - t0;
        } finally {
          rmSync(root, { recursive: true, force: true });
        }
      })();
      rows.push(
        `| ${size} MiB | ${fmt(hubMs)} | ${fmt(s3Ms)} | ${fmt(peerMs)} | ${hit.toFixed(2)} ms | ${(hubMs / peerMs).toFixed(2)}x |`,
      );
      process.stderr.write(`${rows.at(-1)}\n`);
    }
  } finally {
    child.disconnect();
  }
  process.stdout.write(`${rows.join("\n")}\n`);
}

if (process.argv[2] === "--serve") {
  void serve((process.argv[3] ?? "8").split(",").map(Number));
} else {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
