/* eslint-disable @typescript-eslint/unbound-method -- client methods are passed with their client to unary(), which re-binds them */
// Adapter sources end to end: a hub-layout HTTP server and an S3-API server on 127.0.0.1, a real
// cluster (Redis, provisioner, router, worker, LoRA server processes), the host's adapter cache,
// peer fetch between two LoRA servers with separate caches, and the router's prefetch hint.
import { fork, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { credentials } from "@grpc/grpc-js";
import type { LocalCluster } from "@loramesh/cli";
import { CLUSTER_TOKEN_ENV, clusterClientOptions } from "@loramesh/core";
import { unary } from "@loramesh/mesh";
import {
  AdapterState,
  JobState,
  LoraServerServiceClient,
  ProvisionerServiceClient,
  type GetPlacementRequest,
  type LoadJobStatus,
  type LoraServerStats,
  type Placement,
} from "@loramesh/proto";
import { GrpcStatus, LoraMeshClient, LoraMeshClientError } from "@loramesh/sdk";
import {
  startAdapterFileServer,
  startTestS3Server,
  waitFor,
  type AdapterFileServer,
  type TestS3Server,
} from "@loramesh/testing";
import { expect } from "chai";
import { adapterDir, golden, modelDir, startCluster } from "./mesh-helpers";

const PEFT = ["adapter_config.json", "adapter_model.safetensors"];
const peftFiles = (name: string): Map<string, Buffer> =>
  new Map(PEFT.map((f) => [f, readFileSync(join(adapterDir("tiny-llama", name), f))]));
const WEIGHTS_URL = "/acme/sql/resolve/main/adapter_model.safetensors";

const failure = (p: Promise<unknown>): Promise<LoraMeshClientError> =>
  p.then(
    () => expect.fail("should have failed"),
    (e: unknown) => e as LoraMeshClientError,
  );

describe("adapter sources: hub, S3 and HTTP, the host cache, peer fetch and prefetch (real processes)", function () {
  this.timeout(180_000);
  let hub: AdapterFileServer;
  let s3: TestS3Server;
  let scratch: string;
  let hostCache: string;
  let cluster: LocalCluster;
  let client: LoraMeshClient;
  let provisioner: ProvisionerServiceClient;
  let env: NodeJS.ProcessEnv;
  const extra: ChildProcess[] = [];
  const g = golden("tiny-llama");
  const sqlCase = g.cases.find((c) => c.adapter === "sql-r8" && c.prompt === 0);
  const promptIds = (g.prompts[0] as { ids: number[] }).ids;
  const greedy = { maxTokens: 8, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true };
  const complete = (adapter: string): Promise<number[]> =>
    client
      .complete({ prompt: { $case: "tokenIds", value: { ids: promptIds } }, adapter, sampling: greedy })
      .then((r) => r.tokenIds);
  const untilLoaded = async (name: string): Promise<LoadJobStatus[]> => {
    const seen: LoadJobStatus[] = [];
    for await (const s of client.watchAdapterLoad(name)) seen.push(s);
    return seen;
  };
  const cacheEntries = (root: string): string[] =>
    existsSync(join(root, "objects")) ? readdirSync(join(root, "objects")).sort() : [];
  const loraServer = (): string => cluster.processes.find((p) => p.service === "lora-server")?.address as string;
  const stats = (address: string): Promise<LoraServerStats> => {
    const c = new LoraServerServiceClient(
      address,
      credentials.createInsecure(),
      clusterClientOptions(cluster.clusterToken),
    );
    return unary<object, LoraServerStats>(c.getStats, c, {}).finally(() => c.close());
  };

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), "loramesh-sources-"));
    hostCache = join(scratch, "host-cache");
    hub = await startAdapterFileServer({ token: "hf-secret" });
    s3 = await startTestS3Server();
    hub.hub.set("acme/sql", new Map([["main", peftFiles("sql-r8")]]));
    const multi = new Map([...peftFiles("math-r4-mlp")].map(([k, v]) => [`loras/math/${k}`, v]));
    hub.hub.set("acme/multi", new Map([["v2", multi]]));
    hub.dirs.set("pattern", peftFiles("pattern-r8"));
    s3.buckets.set("adapters", new Map([...peftFiles("rslora-r32")].map(([k, v]) => [`team/rs/${k}`, v])));
    env = {
      ...process.env,
      HF_ENDPOINT: hub.url,
      HF_TOKEN: "hf-secret",
      AWS_ENDPOINT_URL: s3.endpoint,
      AWS_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
      LORAMESH_ADAPTER_CACHE: hostCache,
    };
    cluster = await startCluster({
      modelDir: modelDir("tiny-llama"),
      workers: 1,
      loraServers: 1,
      env,
      extraArgs: { router: ["--adapter-wait-ms", "60000"], provisioner: ["--adapter-cache-mib", "1"] },
    });
    client = new LoraMeshClient({ address: cluster.routerAddress });
    const prov = cluster.processes.find((p) => p.service === "provisioner")?.address as string;
    provisioner = new ProvisionerServiceClient(
      prov,
      credentials.createInsecure(),
      clusterClientOptions(cluster.clusterToken),
    );
  });

  after(async () => {
    client?.close();
    provisioner?.close();
    for (const c of extra) c.kill("SIGTERM");
    await Promise.all(
      extra.map((c) => (c.exitCode === null ? new Promise((r) => c.once("exit", r)) : Promise.resolve())),
    );
    await cluster?.stop();
    await hub?.close();
    await s3?.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  it("registers from hf:// (token, revision, subdirectory), s3:// and an HTTP directory, and serves them", async () => {
    const res = await client.registerAdapter("sql", "hf://acme/sql");
    expect(res.adapter?.source?.source).to.deep.equal({ $case: "uri", value: "hf://acme/sql" });
    await client.registerAdapter("math", "hf://acme/multi@v2/loras/math");
    await client.registerAdapter("rs", "s3://adapters/team/rs");
    await client.registerAdapter("pattern", `${hub.url}/files/pattern/`);
    for (const name of ["sql", "math", "rs", "pattern"]) {
      const jobs = await untilLoaded(name);
      expect(jobs.at(-1)?.state, name).to.equal(JobState.JOB_STATE_COMPLETED);
      expect((await client.getAdapter(name)).state, name).to.equal(AdapterState.ADAPTER_STATE_READY);
    }
    expect(await complete("sql")).to.deep.equal(sqlCase?.output_ids.slice(0, 8));
    // The host's processes share one content-addressed cache: each version is there once, by hash.
    const hashes = await Promise.all(
      ["sql", "math", "rs", "pattern"].map(async (n) => (await client.getAdapter(n)).contentHash),
    );
    for (const h of hashes) expect(cacheEntries(hostCache)).to.include(h);
    expect(readdirSync(join(hostCache, "tmp"))).to.deep.equal([]);
  });

  it("refuses bad sources with typed errors, registers nothing and leaves nothing in the cache", async () => {
    const before = cacheEntries(hostCache);
    hub.hub.set("acme/readme-only", new Map([["main", new Map([["README.md", Buffer.from("no adapter here")]])]]));
    hub.hub.set("acme/cut", new Map([["main", peftFiles("chat-r16-all")]]));
    hub.truncate.add("acme/cut/main/adapter_model.safetensors");
    const huge = new Map(peftFiles("big-r64"));
    huge.set("adapter_model.safetensors", Buffer.alloc(2 << 20, 7));
    hub.hub.set("acme/huge", new Map([["main", huge]]));
    const cases: Array<[string, number, RegExp]> = [
      ["hf://acme/missing", GrpcStatus.NOT_FOUND, /not found \(HTTP 404\)/],
      ["hf://acme/readme-only", GrpcStatus.INVALID_ARGUMENT, /lists no PEFT adapter/],
      ["hf://acme/cut", GrpcStatus.UNAVAILABLE, /truncated|broke off/],
      ["hf://acme/huge", GrpcStatus.RESOURCE_EXHAUSTED, /over the adapter cache's limit/],
      ["hf://acme/sql/../../x", GrpcStatus.INVALID_ARGUMENT, /path segment/],
      ["s3://nobucket/x", GrpcStatus.NOT_FOUND, /NoSuchBucket/],
      ["http://127.0.0.1:1/adapters/", GrpcStatus.UNAVAILABLE, /unreachable/],
      ["ftp://host/x", GrpcStatus.INVALID_ARGUMENT, /unsupported adapter source scheme/],
    ];
    for (const [source, code, message] of cases) {
      const e = await failure(client.registerAdapter("bad", source));
      expect(e.code, source).to.equal(code);
      expect(e.details, source).to.match(message);
    }
    const empty = await failure(client.registerAdapter("bad", "s3://adapters/team/nope"));
    expect(empty.code).to.equal(GrpcStatus.INVALID_ARGUMENT); // the prefix lists no files
    expect((await client.listAdapters()).adapters.map((a) => a.name)).to.not.include("bad");
    expect(cacheEntries(hostCache)).to.deep.equal(before);
    expect(readdirSync(join(hostCache, "tmp"))).to.deep.equal([]);
  });

  it("prefetch: a request for a non-resident adapter makes the provisioner start its load from the router's hint", async () => {
    const address = loraServer();
    const lora = new LoraServerServiceClient(
      address,
      credentials.createInsecure(),
      clusterClientOptions(cluster.clusterToken),
    );
    const { adapterId } = await client.getAdapter("sql");
    try {
      // The LoRA server drops the adapter (as its pool would under pressure); placement sees it gone.
      await unary(lora.unloadAdapter, lora, { adapterId });
      await waitFor(
        async () => ((await client.getAdapter("sql")).state !== AdapterState.ADAPTER_STATE_READY ? true : undefined),
        30_000,
        "the adapter to leave placement",
      );
      // Nothing else reloads it: only the router's hint on admitting this request does.
      expect(await complete("sql")).to.deep.equal(sqlCase?.output_ids.slice(0, 8));
      const jobs = await untilLoaded("sql");
      const prefetched = jobs.filter((j) => j.jobId.endsWith("-prefetch"));
      expect(prefetched.length, JSON.stringify(jobs)).to.be.greaterThan(0);
      expect(prefetched.at(-1)?.state).to.equal(JobState.JOB_STATE_COMPLETED);
      expect((await stats(address)).residentAdapterIds).to.include(adapterId);
    } finally {
      lora.close();
    }
  });

  it("peer fetch: a LoRA server with its own cache loads an adapter from the peer that holds it, not the source", async () => {
    const ownCache = join(scratch, "other-host-cache");
    const sourceHits = hub.hits.get(WEIGHTS_URL) ?? 0;
    const prov = cluster.processes.find((p) => p.service === "provisioner")?.address as string;
    const child = fork(
      require.resolve("@loramesh/lora-server/dist/main.js"),
      [
        "--listen",
        "127.0.0.1:0",
        "--provisioner",
        prov,
        "--redis-url",
        cluster.redisUrl,
        "--model",
        modelDir("tiny-llama"),
        "--executor-id",
        "lora-peer-b",
        "--adapter-cache",
        ownCache,
      ],
      { stdio: ["ignore", "inherit", "inherit", "ipc"], env: { ...env, [CLUSTER_TOKEN_ENV]: cluster.clusterToken } },
    );
    extra.push(child);
    const address = await new Promise<string>((resolve, reject) => {
      child.on("message", (m: { type?: string; address?: string }) => {
        if (m.type === "listening" && m.address) resolve(m.address);
      });
      child.once("exit", (code) => reject(new Error(`lora-server exited (${code})`)));
    });
    const { adapterId, contentHash } = await client.getAdapter("sql");
    // The executor that holds it now (the cluster's LoRA server): the move's peer.
    const holder = await waitFor(async () => {
      const placement = await unary<GetPlacementRequest, Placement>(provisioner.getPlacement, provisioner, {
        adapterIds: [adapterId],
      });
      return placement.adapters.find((a) => a.adapterId === adapterId)?.executorIds[0];
    }, 30_000);
    await waitFor(
      async () => {
        const p = await unary<GetPlacementRequest, Placement>(provisioner.getPlacement, provisioner, {
          adapterIds: [],
        });
        return p.executors.some((e) => e.executorId === "lora-peer-b") ? true : undefined;
      },
      30_000,
      "the new LoRA server to register",
    );
    // Move it there, unless the placement policy already gave the new server a replica (a new
    // executor gets the adapters that are hot): either way its load job names the holder as a peer.
    await unary(provisioner.moveAdapter, provisioner, {
      tenant: "default",
      name: "sql",
      fromExecutorId: holder,
      toExecutorId: "lora-peer-b",
    }).catch((err: Error) => expect(err.message).to.match(/already placed on lora-peer-b/));
    const moved = await waitFor(
      async () => {
        const s = await stats(address);
        return s.residentAdapterIds.includes(adapterId) ? s : undefined;
      },
      60_000,
      "the adapter to be resident on the new LoRA server",
    );
    expect(moved.adapterFilesFromPeer).to.equal(1);
    expect(moved.adapterFilesFromSource).to.equal(0);
    expect(hub.hits.get(WEIGHTS_URL) ?? 0).to.equal(sourceHits);
    expect(cacheEntries(ownCache)).to.deep.equal([contentHash]);
    expect(await complete("sql")).to.deep.equal(sqlCase?.output_ids.slice(0, 8));
  });

  it("a source that changes under the same name is a new version, never mixed with the old", async () => {
    const old = await client.getAdapter("math");
    hub.hub.set(
      "acme/multi",
      new Map([["v2", new Map([...peftFiles("sql-r8")].map(([k, v]) => [`loras/math/${k}`, v]))]]),
    );
    expect((await failure(client.registerAdapter("math", "hf://acme/multi@v2/loras/math"))).code).to.equal(
      GrpcStatus.ALREADY_EXISTS,
    );
    await client.deleteAdapter("math");
    await client.registerAdapter("math", "hf://acme/multi@v2/loras/math");
    const fresh = await client.getAdapter("math");
    expect(fresh.contentHash).to.not.equal(old.contentHash);
    expect(fresh.adapterId).to.not.equal(old.adapterId);
    expect(fresh.rank).to.equal(8);
  });
});
