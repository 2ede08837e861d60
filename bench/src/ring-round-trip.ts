/**
 * The shm site round trip of bench:mesh, repeated, with what the LoRA server's ring thread was
 * doing when each post arrived (issue 13, branch m13l: one bench:mesh run measured 113 / 363 µs
 * where every other run measured 8–17 / 14–86). Each repetition runs bench:mesh's sequence on
 * one cluster — the JavaScript shm and gRPC sites, the in-process sites, then the timed ring sites
 * (one begin_step, back-to-back qkv sites on a libuv thread) — and prints, per repetition, the
 * ring's p50 / p99 µs, how many round trips took over 50 µs, and the LoRA server's
 * `posts_found` counters over the ring loop alone (a diagnostic, not an issue figure).
 *
 *   node bench/dist/ring-round-trip.js [--reps N] [--iterations N] [--ring-only] [--clusters N]
 */
import { loadavg } from "node:os";
import { BUNDLED_MODEL, startLocalCluster } from "@loramesh/cli";
import { booleanOption, createLogger, intOption, loadConfig, setClusterToken } from "@loramesh/core";
import { Model } from "@loramesh/engine";
import { nativeStep } from "@loramesh/native";
import {
  percentile,
  qkvSiteWorkload,
  registerAdapters,
  ringServerSeries,
  round,
  siteBackends,
  within,
} from "./mesh-bench-common";

const quiet = createLogger({ level: "error" });
const options = {
  reps: intOption({ flag: "reps", default: 5, min: 1, description: "repetitions per cluster" }),
  clusters: intOption({ flag: "clusters", default: 1, min: 1, description: "fresh clusters, one after the other" }),
  iterations: intOption({ flag: "iterations", default: 400, min: 10, description: "round trips per loop (+50 warm)" }),
  ringOnly: booleanOption({ flag: "ring-only", description: "only the ring loop (no JS, gRPC, in-process loops)" }),
};

const diff = (a: Record<string, number>, b: Record<string, number>): Record<string, number> =>
  Object.fromEntries(
    Object.keys(b)
      .map((k): [string, number] => [k, (b[k] ?? 0) - (a[k] ?? 0)])
      .filter(([, v]) => v !== 0),
  );

async function oneCluster(reps: number, iterations: number, ringOnly: boolean, index: number): Promise<void> {
  const model = Model.load(BUNDLED_MODEL);
  const c = await startLocalCluster({
    startTimeoutMs: 180_000,
    routerListen: "127.0.0.1:0",
    modelDir: BUNDLED_MODEL,
    mode: "disaggregated",
    workers: 1,
    loraServers: 1,
    logger: quiet,
  });
  setClusterToken(c.clusterToken);
  try {
    await registerAdapters(c.routerAddress);
    const { local, shm, grpc, ids, close } = await siteBackends(c);
    const rows = 8;
    const { call, nOut, roundTrips: timed } = qkvSiteWorkload(model.config, ids, rows, iterations);
    // The first JS site attaches the ring.
    await shm.apply(call());
    const fallback = nativeStep.callbackSiteBackend(async () => new Float32Array(rows * nOut));
    for (let r = 0; r < reps; r++) {
      if (!ringOnly) {
        for (const backend of [shm, grpc])
          for (let i = 0; i < iterations + 50; i++) await within("a JS site", backend.apply(call()), 60_000);
        await timed(local.nativeSiteBackend());
      }
      const ring = shm.stepSiteBackend(ids, () => fallback);
      if (!ring) throw new Error("ring-round-trip: the ring is not attached");
      const load = loadavg()[0] as number;
      const before = await ringServerSeries(c);
      const all = Array.from(await timed(ring, true));
      const after = await ringServerSeries(c);
      const field = (k: number) => all.filter((_, i) => i % 6 === k).slice(50);
      const us = field(0);
      const med = (v: number[]) => round(percentile(v, 50));
      const slow = us
        .map((v, i) => [v, i] as const)
        .filter(([v]) => v > 50)
        .map(([, i]) => i);
      const at = (k: number, idx: number[]) => idx.map((i) => field(k)[i] as number);
      console.log(
        JSON.stringify({
          cluster: index,
          rep: r,
          at: new Date().toISOString(),
          load: round(load, 2),
          p50: round(percentile(us, 50)),
          p99: round(percentile(us, 99)),
          over50: slow.length,
          queue: med(field(1)),
          compute: med(field(3)),
          wake: med(field(4)),
          sleeps: field(5).reduce((a, v) => a + v, 0),
          slowQueue: slow.length ? med(at(1, slow)) : null,
          slowWake: slow.length ? med(at(4, slow)) : null,
          slowSlept: at(5, slow).reduce((a, v) => a + v, 0),
          found: diff(before, after),
        }),
      );
    }
    nativeStep.disposeSiteBackend(fallback);
    close();
  } finally {
    await c.stop();
  }
}

async function main(): Promise<void> {
  const { config } = loadConfig(options, process.argv.slice(2));
  for (let k = 0; k < config.clusters; k++) await oneCluster(config.reps, config.iterations, config.ringOnly, k);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
