// The mesh across network namespaces: each service on its own "host" (namespace, address, veth to a
// bridge), no loopback or shared memory between them; partitions by taking a host's link down.
import { expect } from "chai";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { execFileSync } from "node:child_process";
import { credentials, status } from "@grpc/grpc-js";
import { clusterClientOptions } from "@loramesh/core";
import { unary } from "@loramesh/mesh";
import { BaseWorkerServiceClient, LoraServerServiceClient, ProvisionerServiceClient } from "@loramesh/proto";
import { LoraMeshClient, LoraMeshClientError, type GenerateInput } from "@loramesh/sdk";
import { NetnsNetwork, netnsUnavailableReason, reapDeadNetworks, waitFor, type NetnsMesh } from "@loramesh/testing";
import { ucxSupport } from "@loramesh/lora-wire";
import { adapterNames, golden, modelDir, registerAll, runGolden } from "./mesh-helpers";
import { startMeshOnHosts } from "./netns-helpers";

const namespaces = (): string[] =>
  execFileSync("ip", ["netns", "list"], { encoding: "utf8" })
    .split("\n")
    .map((l) => l.split(" ")[0] ?? "");

/** Connects to host:port from the test process; resolves true on connect, false on error/timeout. */
function reachable(host: string, port: number, timeoutMs = 1_500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

async function skipUnlessNetns(ctx: Mocha.Context): Promise<void> {
  const reason = await netnsUnavailableReason();
  if (reason !== undefined) {
    console.log(`      skipped: ${reason}`);
    ctx.skip();
  }
}

describe("netns network: hosts with their own addresses, links that go down and up", function () {
  this.timeout(120_000);
  let network: NetnsNetwork | undefined;

  before(async function () {
    await skipUnlessNetns(this);
    network = await NetnsNetwork.create();
    await network.addHost("a");
    await network.addHost("b");
  });
  after(async () => network?.destroy());

  it("hosts reach each other only over the bridge; a partitioned host is cut off until healed", async () => {
    const net = network as NetnsNetwork;
    const a = net.host("a");
    const b = net.host("b");
    expect(a.address).to.not.equal(b.address);
    expect(namespaces()).to.include.members([a.namespace, b.namespace]);
    // A TCP server on b's address (and one on b's loopback, which no other host can see). A probe
    // that resets its connection early must not kill it: each socket has an error handler.
    const server = net.spawnIn("b", process.execPath, [
      "-e",
      `const net=require("net");for(const h of ["${b.address}","127.0.0.1"])net.createServer(s=>{s.on("error",()=>{});s.end("hi");}).listen(7070,h);`,
    ]);
    void server;
    const probe = (from: string, host: string): boolean => {
      try {
        execFileSync("ip", [
          "netns",
          "exec",
          net.host(from).namespace,
          process.execPath,
          "-e",
          `const s=require("net").connect(7070,"${host}");s.setTimeout(1500,()=>process.exit(1));s.on("data",()=>process.exit(0));s.on("error",()=>process.exit(1));`,
        ]);
        return true;
      } catch {
        return false;
      }
    };
    // A first connection over a fresh veth/bridge can miss (ARP, port state, a busy machine): the
    // positive checks wait for the event with a bounded number of tries; the negative ones probe once.
    const probeEventually = async (from: string, host: string): Promise<boolean> => {
      for (let i = 0; i < 20; i++) {
        if (probe(from, host)) return true;
        await new Promise((r) => setTimeout(r, 250));
      }
      return false;
    };
    let up = false;
    for (let i = 0; i < 200 && !up; i++) {
      up = await reachable(b.address, 7070);
      if (!up) await new Promise((r) => setTimeout(r, 100));
    }
    expect(up, "test process → b").to.equal(true);
    expect(await probeEventually("a", b.address), "a → b over the bridge").to.equal(true);
    expect(probe("a", "127.0.0.1"), "a's loopback is not b's").to.equal(false);
    await net.partition("b");
    expect(probe("a", b.address), "a → b while b is partitioned").to.equal(false);
    expect(await reachable(b.address, 7070), "test process → b while partitioned").to.equal(false);
    await net.heal("b");
    expect(await probeEventually("a", b.address), "a → b after healing").to.equal(true);
  });

  it("reaps the namespaces of a run that died without cleaning up, and only those", async () => {
    // A pid that surely belonged to a process that is gone now.
    const gone = spawn(process.execPath, ["-e", ""]);
    await new Promise((r) => gone.once("exit", r));
    const orphan = `lmt-${gone.pid}-250-sw`;
    execFileSync("ip", ["netns", "add", orphan]);
    const reaped = await reapDeadNetworks();
    expect(reaped).to.include(orphan);
    expect(namespaces()).to.not.include(orphan);
    expect(namespaces(), "this run's own hosts stay").to.include((network as NetnsNetwork).host("a").namespace);
  });
});

/** One stream's result under a fault: the tokens it got, and how it ended. */
interface StreamOutcome {
  ids: number[];
  error: Error | undefined;
}

/**
 * Prints the fault's `fault-summary` line (tried / exact / failed / hung) and asserts that every
 * stream completed token-exact against the undisturbed `reference`.
 */
function expectAllExact(
  fault: string,
  outcomes: readonly StreamOutcome[],
  reference: ReadonlyArray<{ tokenIds: number[] } | undefined>,
): void {
  const exact = outcomes.filter(
    (o, i) => o.error === undefined && JSON.stringify(o.ids) === JSON.stringify(reference[i]?.tokenIds),
  ).length;
  const failed = outcomes.filter((o) => o.error !== undefined);
  const hung = failed.filter(
    (o) => o.error instanceof LoraMeshClientError && o.error.code === status.DEADLINE_EXCEEDED,
  );
  console.log(
    `      fault-summary ${JSON.stringify({ fault, tried: outcomes.length, exact, failed: failed.length, hung: hung.length })}`,
  );
  expect(failed.map((o) => o.error?.message).slice(0, 5)).to.deep.equal([]);
  expect(exact).to.equal(outcomes.length);
}

/**
 * What the current code does when the link between a worker and its only LoRA server goes down
 * mid-decode and stays down past the requests' deadline: every affected request ends with a typed
 * error (DEADLINE_EXCEEDED or UNAVAILABLE) within its deadline, none hangs, and once the link heals
 * the cluster serves new requests token-exact. With one LoRA server there is nothing to fail over
 * to, so `FAILOVER_COMPLETES` stays false here; the two-server tests below require completion.
 */
const FAILOVER_COMPLETES = false;
const ALLOWED_FAILURES = new Set<status>([status.DEADLINE_EXCEEDED, status.UNAVAILABLE]);
/** What the router answers while a healed LoRA server is not yet back in placement. */
const RECOVERING = new Set<status>([status.FAILED_PRECONDITION, status.UNAVAILABLE]);
const STREAMS = 4;
const TOKENS = 48;
const DEADLINE_MS = 10_000;

const partitionInput = (i: number, adapter = "sql-r8"): GenerateInput => ({
  prompt: { $case: "text", value: `def handler_${i}(request):` },
  adapter: i % 2 === 0 ? adapter : "",
  sampling: { maxTokens: TOKENS, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true },
});

/** Cuts the LoRA server's link a quarter into a decode, checks how requests end, heals, checks service. */
async function partitionMidDecode(m: NetnsMesh, client: LoraMeshClient): Promise<void> {
  const reference = await Promise.all([...Array(STREAMS).keys()].map((i) => client.complete(partitionInput(i))));
  let partitioned: Promise<void> | undefined;
  const outcomes = await Promise.all(
    [...Array(STREAMS).keys()].map(async (i) => {
      const ids: number[] = [];
      try {
        for await (const d of client.generate(partitionInput(i), { deadlineMs: DEADLINE_MS })) {
          ids.push(...d.tokenIds);
          // A quarter of the tokens streamed: cut the LoRA server's link.
          if (ids.length >= TOKENS / 4) partitioned ??= m.network.partition("lora0");
        }
        return { ids, error: undefined };
      } catch (err) {
        return { ids, error: err };
      }
    }),
  );
  expect(partitioned, "the partition happened mid-decode").to.not.equal(undefined);
  await partitioned;
  await m.network.heal("lora0");
  let exact = 0;
  outcomes.forEach((o, i) => {
    const want = (reference[i] as { tokenIds: number[] }).tokenIds;
    if (o.error === undefined) {
      expect(o.ids, `stream ${i}`).to.deep.equal(want);
      exact++;
      return;
    }
    expect(o.error, `stream ${i}: a typed client error`).to.be.instanceOf(LoraMeshClientError);
    const code = (o.error as LoraMeshClientError).code;
    expect(ALLOWED_FAILURES.has(code), `stream ${i}: ${(o.error as Error).message}`).to.equal(true);
    // Tokens sent before the partition are a prefix of the undisturbed output (none duplicated).
    expect(o.ids, `stream ${i} prefix`).to.deep.equal(want.slice(0, o.ids.length));
  });
  console.log(`      partition: ${STREAMS} tried, ${exact} completed exact, ${STREAMS - exact} failed typed, 0 hung`);
  if (FAILOVER_COMPLETES) expect(exact).to.equal(STREAMS);
  // Healed: the same requests complete token-exact. The LoRA server's heartbeats expired while it
  // was cut off, so it is out of placement until its next heartbeat is reconciled; until then the
  // router answers with retryable typed errors, which a client retries (bounded).
  let attempts = 0;
  const after = await waitFor(
    async () => {
      attempts++;
      try {
        return await Promise.all([...Array(STREAMS).keys()].map((i) => client.complete(partitionInput(i))));
      } catch (err) {
        const retryable = err instanceof LoraMeshClientError && RECOVERING.has(err.code);
        if (!retryable) throw err;
        return undefined;
      }
    },
    60_000,
    "the healed cluster to serve again",
  );
  console.log(`      after healing: served on attempt ${attempts}`);
  after.forEach((r, i) => expect(r.tokenIds, `after healing ${i}`).to.deep.equal(reference[i]?.tokenIds));
}

describe("mesh across namespace hosts: router+provisioner+Redis, worker and LoRA server on separate hosts", function () {
  this.timeout(300_000);
  const g = golden("tiny-llama");
  let mesh: NetnsMesh | undefined;
  let client: LoraMeshClient;

  before(async function () {
    await skipUnlessNetns(this);
    mesh = await startMeshOnHosts({
      modelDir: modelDir("tiny-llama"),
      mode: "disaggregated",
      workers: 1,
      loraServers: 1,
      // gRPC between the hosts (auto would pick UCX where the native core has it; see below).
      extraArgs: { "base-worker": ["--lora-transport", "grpc"] },
    });
    client = new LoraMeshClient({ address: mesh.routerAddress, defaultDeadlineMs: 120_000 });
    await registerAll(client, "tiny-llama", adapterNames(g));
  });
  after(async () => {
    client?.close();
    await mesh?.stop();
  });

  it("each service listens on its own host's address", () => {
    const m = mesh as NetnsMesh;
    for (const p of m.processes) expect(p.address.startsWith(`${m.host(p.host).address}:`), p.service).to.equal(true);
    expect(new Set(m.processes.map((p) => p.host))).to.deep.equal(new Set(["control", "worker0", "lora0"]));
  });

  it("every internal service demands the cluster token: anonymous calls are UNAUTHENTICATED, the mesh's token is served", async () => {
    const m = mesh as NetnsMesh;
    const at = (service: string): string => m.processes.find((p) => p.service === service)?.address as string;
    const calls: Array<[string, (token: string) => Promise<unknown>]> = [
      [
        "provisioner",
        async (token) => {
          const c = new ProvisionerServiceClient(
            at("provisioner"),
            credentials.createInsecure(),
            clusterClientOptions(token),
          );
          return unary(c.listAdapters.bind(c), c, { tenant: "default", pageSize: 0, pageToken: "" }).finally(() =>
            c.close(),
          );
        },
      ],
      [
        "base-worker",
        async (token) => {
          const c = new BaseWorkerServiceClient(
            at("base-worker"),
            credentials.createInsecure(),
            clusterClientOptions(token),
          );
          return unary(c.getStats.bind(c), c, {}).finally(() => c.close());
        },
      ],
      [
        "lora-server",
        async (token) => {
          const c = new LoraServerServiceClient(
            at("lora-server"),
            credentials.createInsecure(),
            clusterClientOptions(token),
          );
          return unary(c.getStats.bind(c), c, {}).finally(() => c.close());
        },
      ],
    ];
    expect(m.clusterToken).to.have.length.greaterThan(31);
    for (const [service, call] of calls) {
      const refused = (await call("").catch((e: unknown) => e)) as Error;
      expect(refused, `${service}, anonymous`).to.be.instanceOf(Error);
      expect(refused.constructor.name, `${service}, anonymous: ${refused.message}`).to.equal("UnauthenticatedError");
      await call(m.clusterToken); // a mesh member is served
    }
  });

  it("serves every golden case with the reference greedy tokens, over gRPC between hosts (no shared memory)", async () => {
    const got = await runGolden(client, g);
    g.cases.forEach((c, i) => {
      if (c.min_top2_margin > 1e-4) expect(got[i], `${c.adapter ?? "base"}/${c.prompt}`).to.deep.equal(c.output_ids);
    });
    // The LoRA server mapped no shared region: activations crossed the link.
    const lora = (mesh as NetnsMesh).processes.find((p) => p.service === "lora-server");
    const maps = readFileSync(`/proc/${lora?.pid}/maps`, "utf8");
    expect(maps).to.not.match(/\/dev\/shm\/loramesh-/);
  });

  it("a worker ↔ LoRA-server partition mid-decode: requests end with a typed error within their deadline (none hangs), and serve exact after healing", async () => {
    await partitionMidDecode(mesh as NetnsMesh, client);
  });
});

/** The worker's `loramesh_lora_transport` series from its /metrics: server → transport. */
/** The value of one unlabelled counter in the base worker's metrics (0 when absent). */
async function workerCounter(m: NetnsMesh, name: string): Promise<number> {
  const worker = m.processes.find((p) => p.service === "base-worker") as NetnsMesh["processes"][number];
  const port = worker.metricsAddress.slice(worker.metricsAddress.lastIndexOf(":") + 1);
  const text = await (await fetch(`http://${m.host(worker.host).address}:${port}/metrics`)).text();
  const line = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text);
  return line ? Number(line[1]) : 0;
}

async function workerTransports(m: NetnsMesh): Promise<Record<string, string>> {
  const worker = m.processes.find((p) => p.service === "base-worker") as NetnsMesh["processes"][number];
  const port = worker.metricsAddress.slice(worker.metricsAddress.lastIndexOf(":") + 1);
  const text = await (await fetch(`http://${m.host(worker.host).address}:${port}/metrics`)).text();
  const out: Record<string, string> = {};
  for (const line of text.matchAll(/^loramesh_lora_transport\{([^}]*)\} 1$/gm)) {
    const labels = new Map<string, string>();
    for (const l of (line[1] as string).matchAll(/(\w+)="([^"]*)"/g)) labels.set(l[1] as string, l[2] as string);
    out[labels.get("server") ?? ""] = labels.get("transport") ?? "";
  }
  return out;
}

describe("mesh across namespace hosts over UCX (tcp): worker and LoRA server on separate hosts", function () {
  this.timeout(300_000);
  const g = golden("tiny-llama");
  let mesh: NetnsMesh | undefined;
  let client: LoraMeshClient;

  before(async function () {
    await skipUnlessNetns(this);
    if (!ucxSupport().available) {
      console.log("      skipped: this native core was built without UCX (install libucx-dev and rebuild)");
      this.skip();
    }
    mesh = await startMeshOnHosts({
      modelDir: modelDir("tiny-llama"),
      mode: "disaggregated",
      workers: 1,
      loraServers: 1,
      extraArgs: { "base-worker": ["--lora-transport", "ucx"] },
      // TCP only (the namespaces share one kernel, so UCX would otherwise pick its shared-memory
      // transports); metrics on every address of each host, so the test process can read them.
      env: { ...process.env, UCX_TLS: "tcp", METRICS_ADDRESS: "0.0.0.0:0" },
    });
    client = new LoraMeshClient({ address: mesh.routerAddress, defaultDeadlineMs: 120_000 });
    await registerAll(client, "tiny-llama", adapterNames(g));
  });
  after(async () => {
    client?.close();
    await mesh?.stop();
  });

  it("serves every golden case with the reference greedy tokens, its LoRA sites over UCX (visible in the worker's metrics)", async () => {
    const got = await runGolden(client, g);
    g.cases.forEach((c, i) => {
      if (c.min_top2_margin > 1e-4) expect(got[i], `${c.adapter ?? "base"}/${c.prompt}`).to.deep.equal(c.output_ids);
    });
    expect(await workerTransports(mesh as NetnsMesh)).to.deep.equal({ "lora-0": "ucx" });
    const lora = (mesh as NetnsMesh).processes.find((p) => p.service === "lora-server");
    expect(readFileSync(`/proc/${lora?.pid}/maps`, "utf8")).to.not.match(/\/dev\/shm\/loramesh-/);
  });

  it("the native step posts the UCX sites itself (no JavaScript per site): the worker counts UCX step sites, token-exact", async () => {
    const m = mesh as NetnsMesh;
    const before = await workerCounter(m, "loramesh_lora_ucx_step_sites_total");
    const cases = g.cases.filter((c) => c.adapter && c.min_top2_margin > 1e-4).slice(0, 2);
    const got = await runGolden(client, { ...g, cases });
    cases.forEach((c, i) => expect(got[i], `${c.adapter}/${c.prompt}`).to.deep.equal(c.output_ids));
    expect(await workerCounter(m, "loramesh_lora_ucx_step_sites_total")).to.be.above(before);
    expect(await workerCounter(m, "loramesh_lora_ucx_step_rows_total")).to.be.above(0);
  });

  it("a worker ↔ LoRA-server partition mid-decode over UCX: requests end typed within their deadline (none hangs), and serve exact after healing", async () => {
    await partitionMidDecode(mesh as NetnsMesh, client);
  });
});

/**
 * The same partition with a second LoRA server: the worker loses the link to a server holding the
 * adapter mid-decode (≥ 20 streams), and every request still completes token-exact: its rows go
 * to the replica, or wait while the provisioner places the adapter on the reachable server.
 */
describe("mesh across namespace hosts: a worker ↔ LoRA-server partition while another LoRA server is reachable", function () {
  this.timeout(300_000);
  const FAILOVER_STREAMS = 20;
  let mesh: NetnsMesh | undefined;
  let client: LoraMeshClient;

  before(async function () {
    await skipUnlessNetns(this);
    mesh = await startMeshOnHosts({
      modelDir: modelDir("tiny-llama"),
      mode: "disaggregated",
      workers: 1,
      loraServers: 2,
      extraArgs: {
        // A lost server leaves placement within seconds; a round trip to it fails after 3 s. One
        // replica at most: the test's traffic would otherwise make sql-r8 hot and replicate it to
        // both servers, and the cut path would never need the worker's report.
        provisioner: ["--heartbeat-ttl-ms", "3000", "--max-replicas", "1"],
        "base-worker": ["--lora-timeout-ms", "3000"],
      },
    });
    client = new LoraMeshClient({ address: mesh.routerAddress, defaultDeadlineMs: 120_000 });
    await registerAll(client, "tiny-llama", ["sql-r8"]);
  });
  after(async () => {
    client?.close();
    await mesh?.stop();
  });

  /** From the provisioner (a mesh member's call): the LoRA hosts holding the adapter, and the live ones. */
  async function loraHosts(m: NetnsMesh, adapter = "sql-r8"): Promise<{ holders: string[]; live: string[] }> {
    const address = m.processes.find((p) => p.service === "provisioner")?.address as string;
    const c = new ProvisionerServiceClient(address, credentials.createInsecure(), clusterClientOptions(m.clusterToken));
    const host = (ids: string[]): string[] =>
      ids.filter((id) => id.startsWith("lora-")).map((id) => id.replace("-", ""));
    try {
      const placement = await unary(c.getPlacement.bind(c), c, { adapterIds: [] });
      const entry = placement.adapters.find((a) => a.adapterId.startsWith(`default.${adapter}.`));
      return { holders: host(entry?.executorIds ?? []), live: host(placement.executors.map((e) => e.executorId)) };
    } finally {
      c.close();
    }
  }

  it("every request completes token-exact (none failed, none hung); the healed server serves again", async () => {
    const m = mesh as NetnsMesh;
    const inputs = [...Array(FAILOVER_STREAMS).keys()].map((i) => partitionInput(i));
    const reference = await Promise.all(inputs.map((input) => client.complete(input)));
    const [cut] = (await loraHosts(m)).holders;
    expect(cut, "a LoRA server holds sql-r8").to.be.a("string");
    let partitioned: Promise<void> | undefined;
    const outcomes = await Promise.all(
      inputs.map(async (input) => {
        const ids: number[] = [];
        try {
          for await (const d of client.generate(input, { deadlineMs: 120_000 })) {
            ids.push(...d.tokenIds);
            if (ids.length >= TOKENS / 4) partitioned ??= m.network.partition(cut as string);
          }
          return { ids, error: undefined as Error | undefined };
        } catch (err) {
          return { ids, error: err as Error };
        }
      }),
    );
    expect(partitioned, "the partition happened mid-decode").to.not.equal(undefined);
    await partitioned;
    await m.network.heal(cut as string);
    expectAllExact(
      "partition worker ↔ a LoRA server holding the adapter (netns, another reachable)",
      outcomes,
      reference,
    );
    // Healed: the cut-off server comes back into placement (its heartbeats re-register it).
    await waitFor(
      async () => ((await loraHosts(m)).live.includes(cut as string) ? true : undefined),
      60_000,
      `${cut as string} to be live again`,
    );
    const after = await Promise.all(inputs.map((input) => client.complete(input)));
    after.forEach((r, i) => expect(r.tokenIds, `after healing ${i}`).to.deep.equal(reference[i]?.tokenIds));
  });

  it("only the worker ↔ LoRA-server path is cut (the server still heartbeats): the worker's report re-places, every request completes token-exact", async () => {
    const m = mesh as NetnsMesh;
    // An adapter of its own, on exactly one server: only the worker's report can re-place it.
    const adapter = "pattern-r8";
    await registerAll(client, "tiny-llama", [adapter]);
    const inputs = [...Array(FAILOVER_STREAMS).keys()].map((i) => partitionInput(i, adapter));
    const reference = await Promise.all(inputs.map((input) => client.complete(input)));
    const before = await loraHosts(m, adapter);
    expect(before.holders, `${adapter} on one server`).to.have.length(1);
    const [cut] = before.holders;
    let severed: Promise<void> | undefined;
    const outcomes = await Promise.all(
      inputs.map(async (input) => {
        const ids: number[] = [];
        try {
          for await (const d of client.generate(input, { deadlineMs: 120_000 })) {
            ids.push(...d.tokenIds);
            if (ids.length >= TOKENS / 4) severed ??= m.network.cut("worker0", cut as string);
          }
          return { ids, error: undefined as Error | undefined };
        } catch (err) {
          return { ids, error: err as Error };
        }
      }),
    );
    expect(severed, "the cut happened mid-decode").to.not.equal(undefined);
    await severed;
    // Still cut: the server is live to the provisioner (a partition is not a death), and the
    // adapter gets a holder the worker reaches (a replica from the worker's report, when it had
    // none). The replica's placement is a job, so wait for it (bounded) rather than read once.
    let during: { holders: string[]; live: string[] };
    try {
      // On a fast run the first batch can finish before the cut takes effect, and then nothing
      // made the worker report. A batch sent while the cut holds must go through the report.
      const whileCut = await Promise.all(inputs.map((input) => client.complete(input)));
      whileCut.forEach((r, i) => expect(r.tokenIds, `while cut ${i}`).to.deep.equal(reference[i]?.tokenIds));
      during = await waitFor(
        async () => {
          const hosts = await loraHosts(m, adapter);
          return hosts.holders.some((h) => h !== cut) ? hosts : undefined;
        },
        30_000,
        `${adapter} on a server the worker reaches`,
      );
    } finally {
      await m.network.mend("worker0", cut as string);
    }
    expectAllExact(
      "cut worker ↔ the LoRA server holding the adapter, only that path (netns; the server still heartbeats)",
      outcomes,
      reference,
    );
    expect(during.live, "the cut-off server kept heartbeating").to.include(cut);
    const after = await Promise.all(inputs.map((input) => client.complete(input)));
    after.forEach((r, i) => expect(r.tokenIds, `after mending ${i}`).to.deep.equal(reference[i]?.tokenIds));
  });

  // Last: the killed server stays dead (no supervisor here), so nothing after this may need it.
  it("SIGKILL of the LoRA server holding the adapter mid-decode (no shared memory between hosts): every request completes token-exact on the other", async () => {
    const m = mesh as NetnsMesh;
    const adapter = "math-r4-mlp";
    await registerAll(client, "tiny-llama", [adapter]);
    const inputs = [...Array(FAILOVER_STREAMS).keys()].map((i) => partitionInput(i, adapter));
    const reference = await Promise.all(inputs.map((input) => client.complete(input)));
    const before = await loraHosts(m, adapter);
    expect(before.holders, `${adapter} on one server`).to.have.length(1);
    const victim = m.processes.find((p) => p.service === "lora-server" && p.host === before.holders[0]);
    expect(victim, "the holder's process").to.not.equal(undefined);
    const exited = new Promise((resolve) => victim?.child.once("exit", resolve));
    let killed = false;
    const outcomes = await Promise.all(
      inputs.map(async (input) => {
        const ids: number[] = [];
        try {
          for await (const d of client.generate(input, { deadlineMs: 120_000 })) {
            ids.push(...d.tokenIds);
            if (ids.length >= TOKENS / 4 && !killed) {
              killed = true;
              process.kill(victim?.pid as number, "SIGKILL");
            }
          }
          return { ids, error: undefined as Error | undefined };
        } catch (err) {
          return { ids, error: err as Error };
        }
      }),
    );
    expect(killed, "the kill happened mid-decode").to.equal(true);
    await exited;
    expectAllExact(
      "SIGKILL the LoRA server holding the adapter (netns, no shared memory; another server alive)",
      outcomes,
      reference,
    );
    // The cluster serves new requests exactly on the survivor.
    const after = await Promise.all(inputs.map((input) => client.complete(input)));
    after.forEach((r, i) => expect(r.tokenIds, `after the kill ${i}`).to.deep.equal(reference[i]?.tokenIds));
    // The provisioner drops the dead holder when its heartbeats lapse: wait for it (bounded).
    await waitFor(
      async () => ((await loraHosts(m, adapter)).holders.includes(before.holders[0] as string) ? undefined : true),
      30_000,
      `${adapter} re-placed off ${before.holders[0] as string}`,
    );
  });
});
