/**
 * A peer-fetch holder on its own (tests and `bench:mesh`, issue 19): serves one adapter version of
 * `--mib` MiB of random weights over `AdapterPeerService`, as a LoRA server does, with the UCX RMA
 * offer when this native core has UCX (unless `--no-rma`). Listens on `--bind`:0 with the cluster
 * token from the environment and reports `{address, adapterId, contentHash, rma}` to its parent
 * (IPC), then `{stats}` on a "stats" message; exits when the parent disconnects.
 *
 *   node dist/peer-fetch-holder.js --bind 10.77.1.1 --mib 64 [--no-rma]
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { clusterToken, createLogger, startGrpcServer } from "@loramesh/core";
import { UcxPeerRegions, ucxSupport } from "@loramesh/lora-wire";
import { adapterPeerService } from "@loramesh/mesh";
import { AdapterCache, PEFT_CONFIG, PEFT_WEIGHTS } from "@loramesh/sources";

const MiB = 1024 * 1024;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const bind = arg("bind") ?? "127.0.0.1";
  const mib = Number(arg("mib") ?? "16");
  const logger = createLogger({ level: process.env["LOG_LEVEL"] === "info" ? "info" : "error" });
  const root = mkdtempSync(join(tmpdir(), "lm-peer-holder-"));
  const cache = new AdapterCache({ root, limitBytes: (mib + 16) * 4 * MiB });
  const config = Buffer.from(JSON.stringify({ peft_type: "LORA", r: 8, lora_alpha: 16, target_modules: ["q_proj"] }));
  const weights = randomBytes(mib * MiB);
  const cached = await cache.ingest(async (sink) => {
    await sink.file(PEFT_CONFIG, [config], config.length);
    await sink.file(PEFT_WEIGHTS, [weights], weights.length);
  });
  const rma =
    !process.argv.includes("--no-rma") && ucxSupport().available ? new UcxPeerRegions(() => bind, logger) : undefined;
  const server = await startGrpcServer({
    address: `${bind}:0`,
    services: [adapterPeerService((_id, hash) => cache.lookup(hash), logger, rma)],
    logger,
    clusterToken: clusterToken(),
  });
  process.on("message", (m) => {
    if (m === "stats") process.send?.({ stats: rma?.stats() ?? null });
  });
  process.send?.({ address: server.address, adapterId: "peer-bench", contentHash: cached.contentHash, rma: !!rma });
  process.once("disconnect", () => {
    rma?.stop();
    rmSync(root, { recursive: true, force: true });
    process.exit(0);
  });
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
