/**
 * The `"ucx"` entries of `pnpm bench:mesh --json` (issue 19): the same LoRA site and decode step as
 * the same-host figures, but across a real link. A namespace cluster (packages/testing) puts the
 * LoRA server on its own host (network namespace, veth into a bridge); the benchmark process sits
 * on the bridge's uplink, so its sites cross veth + bridge + veth like a worker's on another host.
 * Per-site round trip over UCX (UCX_TLS=tcp) vs gRPC on that link in one run, then the decode step
 * of a worker on its own host with `--lora-transport ucx` vs `grpc`. Without root (no namespaces)
 * or without UCX in the native core, the entry says why instead of numbers.
 */
import { dirname } from "node:path";
import { RemoteLoraBackend } from "@loramesh/base-worker";
import { BUNDLED_MODEL } from "@loramesh/cli";
import { createLogger, setClusterToken } from "@loramesh/core";
import { Model } from "@loramesh/engine";
import { siteShape } from "@loramesh/formats";
import { PlacementCache } from "@loramesh/mesh";
import { f32, native } from "@loramesh/native";
import { waitForServing } from "@loramesh/sdk";
import { netnsUnavailableReason, startNetnsMesh, type NetnsMesh, type NetnsMeshOptions } from "@loramesh/testing";
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
      ucx_version: string;
    };

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
  return {
    link: "veth + bridge + veth between network namespaces (one kernel), UCX_TLS=tcp",
    site: "qkv, 8 rows, layer 1",
    site_round_trip_us: siteUs,
    ucx_over_grpc_p50: round(siteUs.ucx.p50 / siteUs.grpc.p50, 2),
    target_ucx_over_grpc_p50: 0.5,
    decode_step_ms: { disaggregated_ucx: ucxStep, disaggregated_grpc: grpcStep },
    ucx_version: support.version,
  };
}
