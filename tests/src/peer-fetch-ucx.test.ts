// Peer adapter fetch over UCX RMA between namespace hosts (issue 19): a holder on its own host
// registers the version's files and offers them over its gRPC API (cluster token checked); this
// process, on the bridge's uplink, reads them with one RMA get over a real veth link, and falls back
// to the gRPC stream when the holder offers no RMA.
import { expect } from "chai";
import { type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { credentials, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { CLUSTER_TOKEN_ENV, createLogger, generateClusterToken } from "@loramesh/core";
import { adapterContentHash } from "@loramesh/formats";
import { ucxPeerReader, ucxSupport } from "@loramesh/lora-wire";
import { AdapterMaterializer } from "@loramesh/mesh";
import { AdapterPeerServiceClient } from "@loramesh/proto";
import { AdapterCache, PEFT_CONFIG, PEFT_WEIGHTS } from "@loramesh/sources";
import { NetnsNetwork, netnsUnavailableReason, stopChild } from "@loramesh/testing";

interface Holder {
  child: ChildProcess;
  address: string;
  adapterId: string;
  contentHash: string;
  rma: boolean;
}

function restoreEnv(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}

const HOLDER = require.resolve("@loramesh/lora-server/dist/peer-fetch-holder.js");
const quiet = createLogger({ level: "error" });

describe("peer adapter fetch over UCX RMA between namespace hosts (tcp)", function () {
  this.timeout(180_000);
  const token = generateClusterToken();
  /** What this file changed in the environment, to restore (undefined: nothing changed). */
  let saved: { tls: string | undefined; token: string | undefined } | undefined;
  let network: NetnsNetwork | undefined;
  const holders: Holder[] = [];
  const roots: string[] = [];

  async function startHolder(host: string, extra: string[]): Promise<Holder> {
    const net = network as NetnsNetwork;
    const child = net.spawnIn(
      host,
      process.execPath,
      [HOLDER, "--bind", net.host(host).address, "--mib", "24", ...extra],
      {
        env: { ...process.env, [CLUSTER_TOKEN_ENV]: token, UCX_TLS: "tcp" },
        stdio: ["ignore", "inherit", "inherit", "ipc"],
      },
    );
    const ready = await new Promise<Omit<Holder, "child">>((resolve, reject) => {
      child.once("message", (m) => resolve(m as Omit<Holder, "child">));
      child.once("exit", (code) => reject(new Error(`the holder exited (${code}) before serving`)));
    });
    const holder = { child, ...ready };
    holders.push(holder);
    return holder;
  }

  function materializer(): AdapterMaterializer {
    const root = mkdtempSync(join(tmpdir(), "lm-peer-fetch-"));
    roots.push(root);
    return new AdapterMaterializer(new AdapterCache({ root, limitBytes: 1 << 30 }), "fetcher", quiet, ucxPeerReader);
  }

  const holderStats = (h: Holder): Promise<{ accepted: number; refused: number; regions: number } | null> =>
    new Promise((resolve) => {
      h.child.once("message", (m) =>
        resolve((m as { stats: { accepted: number; refused: number; regions: number } | null }).stats),
      );
      h.child.send("stats");
    });

  before(async function () {
    const reason = await netnsUnavailableReason();
    if (reason !== undefined) {
      console.log(`      skipped: ${reason}`);
      this.skip();
    }
    if (!ucxSupport().available) {
      console.log("      skipped: this native core was built without UCX (install libucx-dev and rebuild)");
      this.skip();
    }
    saved = { tls: process.env["UCX_TLS"], token: process.env[CLUSTER_TOKEN_ENV] };
    process.env["UCX_TLS"] = "tcp"; // this process's RMA gets (read when each UCX context starts)
    // This process's clients take the token from the environment (never setClusterToken: it would
    // outlive this file and override the token later tests put in the environment).
    process.env[CLUSTER_TOKEN_ENV] = token;
    network = await NetnsNetwork.create();
    await network.addHost("holder");
    await network.addHost("plain");
  });
  after(async () => {
    for (const h of holders) await stopChild(h.child);
    await network?.destroy();
    for (const r of roots) rmSync(r, { recursive: true, force: true });
    if (saved) {
      restoreEnv(CLUSTER_TOKEN_ENV, saved.token);
      restoreEnv("UCX_TLS", saved.tls);
    }
  });

  it("reads the version with one RMA get across the link, hash-checked into the cache (path ucx)", async () => {
    const holder = await startHolder("holder", []);
    expect(holder.rma).to.equal(true);
    const files = materializer();
    const got = await files.materialize({
      adapterId: holder.adapterId,
      dir: "",
      source: "hf://bench/peer-fetch",
      contentHash: holder.contentHash,
      peers: [{ executorId: "holder", address: holder.address }],
    });
    expect(got).to.include({ origin: "peer", peer: "holder", path: "ucx" });
    expect(files.peerPaths).to.deep.equal({ ucx: 1, grpc: 0, ucxFallbacks: 0 });
    const hash = await adapterContentHash({
      configPath: join(got.dir, PEFT_CONFIG),
      weightsPath: join(got.dir, PEFT_WEIGHTS),
    });
    expect(hash).to.equal(holder.contentHash);
    const stats = await holderStats(holder);
    expect(stats).to.include({ regions: 1, refused: 0 });
    expect(stats?.accepted).to.be.at.least(1);
  });

  it("refuses an RMA offer to a caller without the cluster token (UNAUTHENTICATED)", async () => {
    const holder = holders[0] ?? (await startHolder("holder", []));
    const anonymous = new AdapterPeerServiceClient(holder.address, credentials.createInsecure());
    try {
      const err = await new Promise<ServiceError | null>((resolve) =>
        anonymous.offerAdapterRma(
          { adapterId: holder.adapterId, contentHash: holder.contentHash },
          new Metadata(),
          { deadline: Date.now() + 30_000 },
          (e) => resolve(e),
        ),
      );
      expect(err?.code).to.equal(status.UNAUTHENTICATED);
    } finally {
      anonymous.close();
    }
  });

  it("streams over gRPC instead when the holder offers no RMA (logged and counted as a fallback)", async () => {
    const holder = await startHolder("plain", ["--no-rma"]);
    expect(holder.rma).to.equal(false);
    const files = materializer();
    const got = await files.materialize({
      adapterId: holder.adapterId,
      dir: "",
      source: "hf://bench/peer-fetch",
      contentHash: holder.contentHash,
      peers: [{ executorId: "plain", address: holder.address }],
    });
    expect(got).to.include({ origin: "peer", peer: "plain", path: "grpc" });
    expect(files.peerPaths).to.deep.equal({ ucx: 0, grpc: 1, ucxFallbacks: 1 });
  });
});
