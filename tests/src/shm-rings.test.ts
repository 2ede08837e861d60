// Shared-memory rings between real processes: golden tokens through the rings, then SIGKILL of a
// LoRA server mid-decode and of a worker, and no ring segment left in /dev/shm afterwards.
import { expect } from "chai";
import { status } from "@grpc/grpc-js";
import type { LocalCluster } from "@loramesh/cli";
import { LoraMeshClient, LoraMeshClientError } from "@loramesh/sdk";
import {
  adapterNames,
  golden,
  modelDir,
  namedRingSegments,
  registerAll,
  ringMappings,
  runGolden,
  startCluster,
  until,
} from "./mesh-helpers";

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function scrape(address: string): Promise<string> {
  const res = await fetch(`http://${address}/metrics`);
  return res.text();
}

/** The first capture of `re` in a Prometheus text, as a number (0 when absent). */
const counter = (text: string, re: RegExp): number => Number(re.exec(text)?.[1] ?? 0);

describe("shared-memory rings between real processes (SIGKILL of either side)", function () {
  this.timeout(300_000);
  const g = golden("tiny-llama");
  let cluster: LocalCluster;
  let client: LoraMeshClient;
  let serverPids: number[];

  before(async function () {
    if (process.platform !== "linux") this.skip();
    cluster = await startCluster({
      modelDir: modelDir("tiny-llama"),
      mode: "disaggregated",
      workers: 2,
      loraServers: 2,
      extraArgs: { "base-worker": ["--shared-memory=true"] },
    });
    client = new LoraMeshClient({ address: cluster.routerAddress, defaultDeadlineMs: 120_000 });
    await registerAll(client, "tiny-llama", adapterNames(g));
    serverPids = cluster.processes.filter((p) => p.service === "lora-server").map((p) => p.pid);
  });

  after(async () => {
    client?.close();
    await cluster?.stop();
  });

  const workers = () => cluster.processes.filter((p) => p.service === "base-worker");

  it("serves the golden tokens through the rings; the segments are mapped by both sides and named nowhere", async () => {
    const got = await runGolden(client, g);
    g.cases.forEach((c, i) => {
      if (c.min_top2_margin > 1e-4) expect(got[i], `${c.adapter ?? "base"}/${c.prompt}`).to.deep.equal(c.output_ids);
    });
    for (const w of workers()) {
      const rings = ringMappings(w.pid);
      expect(rings.length, `rings of worker ${w.pid}`).to.be.greaterThan(0);
      for (const r of rings) expect(serverPids).to.include(r.serverPid);
    }
    expect(namedRingSegments(serverPids)).to.deep.equal([]);
    // The native path was taken: the workers' steps posted ring sites themselves (no JavaScript per
    // site), and the LoRA servers count those rows per adapter like the stream's.
    const ringRows = async (): Promise<number> => {
      let rows = 0;
      for (const w of workers()) {
        const text = await scrape(w.metricsAddress);
        expect(
          counter(text, /^loramesh_lora_ring_sites_total\{[^}]*path="ring"[^}]*\} (\d+)/m),
          `ring sites of ${w.pid}`,
        ).to.be.greaterThan(0);
        rows += counter(text, /^loramesh_lora_ring_rows_total(?:\{[^}]*\})? (\d+)/m);
        // Each step's ring sites come back summed from the native step: one histogram sample per
        // step, and the server's kernel time among the phases.
        expect(
          counter(text, /^loramesh_lora_ring_step_seconds_count(?:\{[^}]*\})? (\d+)/m),
          `steps with ring timing of ${w.pid}`,
        ).to.be.greaterThan(0);
        expect(
          counter(text, /^loramesh_lora_ring_seconds_total\{[^}]*phase="compute"[^}]*\} ([0-9.e+-]+)/m),
          `ring compute seconds of ${w.pid}`,
        ).to.be.greaterThan(0);
      }
      return rows;
    };
    const workerRows = await ringRows();
    expect(workerRows).to.be.greaterThan(0);
    const serverRingRows = async (): Promise<number> => {
      let rows = 0;
      for (const p of cluster.processes.filter((x) => x.service === "lora-server")) {
        const text = await scrape(p.metricsAddress);
        for (const m of text.matchAll(/^loramesh_lora_rows_total\{[^}]*transport="ring"[^}]*\} (\d+)/gm))
          rows += Number(m[1]);
      }
      return rows;
    };
    // The servers take their ring counts from the ring thread once a second: wait for them.
    const start = Date.now();
    let served = await serverRingRows();
    while (served < workerRows && Date.now() - start < 30_000) {
      await new Promise((r) => setTimeout(r, 200));
      served = await serverRingRows();
    }
    expect(served, "ring rows the LoRA servers counted per adapter").to.be.at.least(workerRows);
  });

  it("SIGKILL of a LoRA server mid-decode: every request finishes or fails with UNAVAILABLE, the workers live on", async () => {
    const victim = workers()
      .flatMap((w) => ringMappings(w.pid))
      .map((r) => r.serverPid)[0] as number;
    const request = (adapter: string) => ({
      prompt: { $case: "text" as const, value: "select * from" },
      adapter,
      sampling: { maxTokens: 200, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true },
    });
    // Every adapter decoding at once; the kill comes after each has streamed its first token.
    let started = 0;
    const names = adapterNames(g);
    let killed!: () => void;
    const allStarted = new Promise<void>((resolve) => (killed = resolve));
    const runs = names.map(async (name) => {
      let first = true;
      try {
        for await (const delta of client.generate(request(name))) {
          if (first && delta.tokenIds.length > 0) {
            first = false;
            if (++started === names.length) killed();
          }
        }
        return "finished";
      } catch (err) {
        if (first && ++started === names.length) killed();
        return err;
      }
    });
    await allStarted;
    process.kill(victim, "SIGKILL");
    const outcomes = await Promise.all(runs);
    for (const o of outcomes) {
      if (o === "finished") continue;
      expect(o).to.be.instanceOf(LoraMeshClientError);
      expect((o as LoraMeshClientError).code, (o as Error).message).to.equal(status.UNAVAILABLE);
    }
    // The kill took effect: the victim is gone (`up` may have started a new server in its place;
    // the worker's failover then finishes what the victim held, or fails it with UNAVAILABLE).
    expect(alive(victim), "the killed LoRA server").to.equal(false);
    for (const w of workers()) expect(alive(w.pid), `worker ${w.pid}`).to.equal(true);
    // The dead server's segments: unmapped by the workers once they saw it die, and named nowhere.
    await until(
      () => workers().every((w) => ringMappings(w.pid).every((r) => r.serverPid !== victim)),
      "workers unmap the dead server's rings",
    );
    expect(namedRingSegments([victim])).to.deep.equal([]);
  });

  it("SIGKILL of a worker: the LoRA server detaches it and unmaps its ring; /dev/shm holds no ring segment", async () => {
    const survivor = cluster.processes.find((p) => p.service === "lora-server" && alive(p.pid));
    expect(survivor, "a live LoRA server").to.not.equal(undefined);
    const serverPid = survivor?.pid as number;
    // Make sure both workers hold a ring with the survivor: serve every adapter again (the
    // provisioner re-places the dead server's adapters; requests that still name it fail cleanly).
    const ringsOf = (pid: number) => ringMappings(pid).filter((r) => r.serverPid === serverPid);
    const [victim, other] = workers();
    if (ringsOf(victim?.pid as number).length === 0) {
      const req = {
        prompt: { $case: "text" as const, value: "x" },
        sampling: { maxTokens: 4, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true },
      };
      for (const name of adapterNames(g)) await client.complete({ ...req, adapter: name }).catch(() => undefined);
    }
    const victimRings = ringsOf(victim?.pid as number).map((r) => r.segment);
    expect(victimRings.length, "the worker to kill has a ring with the survivor").to.be.greaterThan(0);
    const serverHas = (segment: string) => ringMappings(serverPid).some((r) => r.segment === segment);
    for (const s of victimRings) expect(serverHas(s), `server maps ${s}`).to.equal(true);
    process.kill(victim?.pid as number, "SIGKILL");
    await until(() => victimRings.every((s) => !serverHas(s)), "the server detaches the killed worker");
    // The other worker's ring is untouched.
    for (const r of ringsOf(other?.pid as number)) expect(serverHas(r.segment)).to.equal(true);
    expect(namedRingSegments([...serverPids, ...workers().map((w) => w.pid)])).to.deep.equal([]);
  });
});
