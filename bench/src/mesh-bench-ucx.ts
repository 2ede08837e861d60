/**
 * The `"ucx"` entries of `pnpm bench:mesh --json` (issue 19): the same LoRA site and decode step as
 * the same-host figures, but across a real link. A namespace cluster (packages/testing) puts the
 * LoRA server on its own host (network namespace, veth into a bridge); the benchmark process sits
 * on the bridge's uplink, so its sites cross veth + bridge + veth like a worker's on another host.
 * Per-site round trip over UCX (UCX_TLS=tcp) vs gRPC on that link in one run, then the decode step
 * of a worker on its own host with `--lora-transport ucx` vs `grpc`, then peer adapter fetch
 * throughput from a holder on its own host: one UCX RMA get vs the gRPC stream, same adapter, same
 * link, into a fresh cache each time (hash-checked either way). Without root (no namespaces)
 * or without UCX in the native core, the entry says why instead of numbers.
 */
import { type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { RemoteLoraBackend } from "@loramesh/base-worker";
import { BUNDLED_MODEL } from "@loramesh/cli";
import { createLogger, generateClusterToken, setClusterToken } from "@loramesh/core";
import { Model } from "@loramesh/engine";
import { siteShape } from "@loramesh/formats";
import { fetchFromPeer, fetchFromPeerRma, PlacementCache, type PeerRmaReader } from "@loramesh/mesh";
import { f32, native } from "@loramesh/native";
import { waitForServing } from "@loramesh/sdk";
import { AdapterCache } from "@loramesh/sources";
import {
  NetnsNetwork,
  netnsUnavailableReason,
  startNetnsMesh,
  stopChild,
  type NetnsMesh,
  type NetnsMeshOptions,
} from "@loramesh/testing";
import { decodeStepMsOn, percentile, registerAdapters, round, within } from "./mesh-bench-common";

const quiet = createLogger({ level: "error" });

/** The services' entries, resolved from the CLI package (which depends on all four). */
function entries(): NetnsMeshOptions["entries"] {
  const from = { paths: [dirname(require.resolve("@loramesh/cli"))] };
  return {
    router: require.resolve("@loramesh/router/dist/main.js", from),
    provisioner: require.resolve("@loramesh/provisioner/dist/main.js", from),
    "base-worker": require.resolve("@loramesh/base-worker/dist/main.js", from),
    "lora-server": require.resolve("@loramesh/lora-server/dist/main.js", from),
  };
}

export type UcxReport =
  | { skipped: string }
  | {
      link: string;
      site: string;
      site_round_trip_us: { ucx: { p50: number; p99: number }; grpc: { p50: number; p99: number } };
      ucx_over_grpc_p50: number;
      target_ucx_over_grpc_p50: number;
      decode_step_ms: { disaggregated_ucx: number; disaggregated_grpc: number };
      /** Peer adapter fetch, MB/s (10^6 bytes) of config + weights into a fresh cache, median of the repeats. */
      peer_fetch_mb_s: { ucx: number; grpc: number };
      peer_fetch: { adapter_mib: number; repeats: number; ms: { ucx: number[]; grpc: number[] } };
      ucx_version: string;
    };

const PEER_FETCH_MIB = 64;
const PEER_FETCH_REPEATS = 3;

/**
 * Peer fetch of one adapter version from a holder on its own namespace host (the LoRA server's
 * AdapterPeerService, run alone: services/lora-server peer-fetch-holder) to this process on the
 * uplink: UCX RMA get vs gRPC stream, interleaved so both see the same machine load.
 */
async function peerFetch(): Promise<{ ucx: number; grpc: number; ms: { ucx: number[]; grpc: number[] } }> {
  const from = { paths: [dirname(require.resolve("@loramesh/cli"))] };
  const holderJs = require.resolve("@loramesh/lora-server/dist/peer-fetch-holder.js", from);
  const token = generateClusterToken();
  setClusterToken(token);
  const network = await NetnsNetwork.create();
  let child: ChildProcess | undefined;
  try {
    await network.addHost("holder");
    child = network.spawnIn(
      "holder",
      process.execPath,
      [holderJs, "--bind", network.host("holder").address, "--mib", String(PEER_FETCH_MIB)],
      {
        env: { ...process.env, LORAMESH_CLUSTER_TOKEN: token, UCX_TLS: "tcp" },
        stdio: ["ignore", "inherit", "inherit", "ipc"],
      },
    );
    const holder = await within(
      "the peer-fetch holder",
      new Promise<{ address: string; adapterId: string; contentHash: string; rma: boolean }>((resolve) =>
        child?.once("message", (m) =>
          resolve(m as { address: string; adapterId: string; contentHash: string; rma: boolean }),
        ),
      ),
      120_000,
    );
    if (!holder.rma) throw new Error("the peer-fetch holder started without UCX RMA");
    const reader: PeerRmaReader = {
      get: (r, timeoutMs) => native.ucxRegionGet(r.host, r.port, r.address, r.rkey, r.length, timeoutMs),
    };
    const ms: { ucx: number[]; grpc: number[] } = { ucx: [], grpc: [] };
    let bytes = 0;
    for (let i = 0; i < PEER_FETCH_REPEATS; i++) {
      for (const path of ["ucx", "grpc"] as const) {
        const root = mkdtempSync(join(tmpdir(), "lm-peer-fetch-bench-"));
        try {
          const cache = new AdapterCache({ root, limitBytes: 4 * PEER_FETCH_MIB * 1024 * 1024 });
          const t0 = performance.now();
          const got =
            path === "ucx"
              ? await fetchFromPeerRma(holder.address, holder.adapterId, holder.contentHash, cache, reader)
              : await fetchFromPeer(holder.address, holder.adapterId, holder.contentHash, cache);
          ms[path].push(round(performance.now() - t0));
          bytes = got.sizeBytes;
        } finally {
          rmSync(root, { recursive: true, force: true });
        }
      }
    }
    const rate = (xs: number[]) => round(bytes / 1e6 / (percentile(xs, 50) / 1000));
    return { ucx: rate(ms.ucx), grpc: rate(ms.grpc), ms };
  } finally {
    if (child) await stopChild(child);
    await network.destroy();
  }
}

async function meshWith(transport: "ucx" | "grpc"): Promise<NetnsMesh> {
  const mesh = await startNetnsMesh({
    entries: entries(),
    waitServing: (address, timeoutMs) => waitForServing({ address }, timeoutMs),
    modelDir: BUNDLED_MODEL,
    mode: "disaggregated",
    workers: 1,
    loraServers: 1,
    startTimeoutMs: 180_000,
    extraArgs: { "base-worker": ["--lora-transport", transport] },
    env: { ...process.env, UCX_TLS: "tcp", LOG_LEVEL: "error" },
  });
  // This process talks to the internal services itself (placement, AttachUcx): it needs this
  // mesh's token, or the provisioner refuses it and the placement never arrives.
  setClusterToken(mesh.clusterToken);
  return mesh;
}

/** p50/p99 µs of one qkv site of `rows` rows from this process to the LoRA server's host, per wire. */
async function siteRoundTrips(mesh: NetnsMesh, iterations: number, rows: number) {
  const model = Model.load(BUNDLED_MODEL);
  const provisioner = mesh.processes.find((p) => p.service === "provisioner")?.address as string;
  const placement = new PlacementCache(provisioner, quiet);
  await within("the first placement snapshot", placement.ready, 60_000);
  const ids = [...placement.holders.keys()].sort();
  const remote = (choice: "ucx" | "grpc") =>
    new RemoteLoraBackend({
      config: model.config,
      placement,
      workerId: `bench-${choice}`,
      hostId: "bench",
      sharedMemory: false,
      transport: { choice, sharedMemory: false, ucxAvailable: true },
      logger: quiet,
    });
  const backends = { ucx: remote("ucx"), grpc: remote("grpc") };
  const { hIn, nOut } = siteShape(model.config, "qkv");
  const x = f32(
    [rows, hIn],
    Float32Array.from({ length: rows * hIn }, (_, i) => Math.sin(i)),
  );
  const rowAdapter = Int32Array.from({ length: rows }, (_, t) => t % ids.length);
  const samples: Record<"ucx" | "grpc", number[]> = { ucx: [], grpc: [] };
  // Interleaved, so both wires see the same machine load.
  for (let i = 0; i < iterations + 50; i++) {
    for (const name of ["ucx", "grpc"] as const) {
      const y = f32([rows, nOut]);
      const t0 = performance.now();
      await backends[name].apply({ layer: 1, site: "qkv", x, y, adapters: ids, rowAdapter });
      if (i >= 50) samples[name].push((performance.now() - t0) * 1000);
    }
  }
  const transports = backends.ucx.transports();
  for (const b of Object.values(backends)) b.close();
  placement.close();
  if (!Object.values(transports).every((t) => t === "ucx"))
    throw new Error(`the UCX backend did not use UCX: ${JSON.stringify(transports)}`);
  const stats = (s: number[]) => ({ p50: round(percentile(s, 50)), p99: round(percentile(s, 99)) });
  return { ucx: stats(samples.ucx), grpc: stats(samples.grpc) };
}

export async function ucxReport(iterations: number, tokens: number): Promise<UcxReport> {
  const reason = await netnsUnavailableReason();
  if (reason !== undefined) return { skipped: `no multi-host harness: ${reason}` };
  const support = native.ucxInfo();
  if (!support.available) return { skipped: "this native core was built without UCX (install libucx-dev and rebuild)" };
  process.env["UCX_TLS"] = "tcp"; // this process's own UCX context (read when it starts)
  let mesh = await meshWith("ucx");
  let siteUs;
  let ucxStep: number;
  try {
    await registerAdapters(mesh.routerAddress);
    siteUs = await siteRoundTrips(mesh, iterations, 8);
    ucxStep = await decodeStepMsOn(mesh.routerAddress, 8, tokens);
  } finally {
    await mesh.stop();
  }
  mesh = await meshWith("grpc");
  let grpcStep: number;
  try {
    await registerAdapters(mesh.routerAddress);
    grpcStep = await decodeStepMsOn(mesh.routerAddress, 8, tokens);
  } finally {
    await mesh.stop();
  }
  const fetched = await peerFetch();
  return {
    link: "veth + bridge + veth between network namespaces (one kernel), UCX_TLS=tcp",
    site: "qkv, 8 rows, layer 1",
    site_round_trip_us: siteUs,
    ucx_over_grpc_p50: round(siteUs.ucx.p50 / siteUs.grpc.p50, 2),
    target_ucx_over_grpc_p50: 0.5,
    decode_step_ms: { disaggregated_ucx: ucxStep, disaggregated_grpc: grpcStep },
    peer_fetch_mb_s: { ucx: fetched.ucx, grpc: fetched.grpc },
    peer_fetch: { adapter_mib: PEER_FETCH_MIB, repeats: PEER_FETCH_REPEATS, ms: fetched.ms },
    ucx_version: support.version,
  };
}
