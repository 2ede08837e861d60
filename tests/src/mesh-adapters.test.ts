import { expect } from "chai";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LocalCluster } from "@loramesh/cli";
import { AdapterState, JobState, type LoadJobStatus } from "@loramesh/proto";
import { GrpcStatus, LoraMeshClient, LoraMeshClientError } from "@loramesh/sdk";
import { spawnSync } from "node:child_process";
import { connectRedis, REDIS_KEYS } from "@loramesh/mesh";
import { REPO_ROOT } from "@loramesh/testing";
import { adapterDir, golden, modelDir, startCluster } from "./mesh-helpers";

async function redisAdapterCount(url: string): Promise<number> {
  const redis = await connectRedis(url);
  try {
    return await redis.scard(REDIS_KEYS.adapters);
  } finally {
    redis.disconnect();
  }
}

const err = (p: Promise<unknown>): Promise<LoraMeshClientError> =>
  p.then(
    () => expect.fail("should have failed"),
    (e: unknown) => e as LoraMeshClientError,
  );

describe("mesh: adapters and tenants (real processes, Redis, BullMQ)", function () {
  this.timeout(120_000);
  let cluster: LocalCluster;
  let alpha: LoraMeshClient;
  let beta: LoraMeshClient;
  let anonymous: LoraMeshClient;
  let scratch: string;
  const g = golden("tiny-llama");
  const promptIds = (g.prompts[0] as { ids: number[] }).ids;
  const greedy = { maxTokens: 8, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true };

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), "loramesh-adapters-"));
    cluster = await startCluster({
      modelDir: modelDir("tiny-llama"),
      workers: 1,
      extraArgs: { router: ["--api-keys", "key-a=alpha,key-b=beta"] },
    });
    alpha = new LoraMeshClient({ address: cluster.routerAddress, apiKey: "key-a" });
    beta = new LoraMeshClient({ address: cluster.routerAddress, apiKey: "key-b" });
    anonymous = new LoraMeshClient({ address: cluster.routerAddress });
  });

  after(async () => {
    for (const c of [alpha, beta, anonymous]) c?.close();
    await cluster?.stop();
    rmSync(scratch, { recursive: true, force: true });
  });

  it("registers an adapter while the mesh runs, shows its load job's progress, and serves it without a restart", async () => {
    const res = await alpha.registerAdapter("sql", adapterDir("tiny-llama", "sql-r8"));
    expect(res.adapter?.rank).to.equal(8);
    expect(res.loadJobIds.length).to.be.greaterThan(0);
    const updates: LoadJobStatus[] = [];
    for await (const status of alpha.watchAdapterLoad("sql")) updates.push(status);
    expect(updates.length).to.be.greaterThan(0);
    const last = updates[updates.length - 1] as LoadJobStatus;
    expect(last.state).to.equal(JobState.JOB_STATE_COMPLETED);
    expect(last.progress).to.equal(1);
    expect(last.kind).to.equal("load");
    expect((await alpha.getAdapter("sql")).state).to.equal(AdapterState.ADAPTER_STATE_READY);

    const out = await alpha.complete({
      prompt: { $case: "tokenIds", value: { ids: promptIds } },
      adapter: "sql",
      sampling: greedy,
    });
    const want = g.cases.find((c) => c.adapter === "sql-r8" && c.prompt === 0)?.output_ids.slice(0, 8);
    expect(out.tokenIds).to.deep.equal(want);
    expect((await alpha.listAdapters()).adapters.map((a) => a.name)).to.deep.equal(["sql"]);
  });

  it("makes another tenant's adapter indistinguishable from an unknown one", async () => {
    const theirs = await err(
      beta.complete({ prompt: { $case: "tokenIds", value: { ids: promptIds } }, adapter: "sql", sampling: greedy }),
    );
    const unknown = await err(
      beta.complete({ prompt: { $case: "tokenIds", value: { ids: promptIds } }, adapter: "nope", sampling: greedy }),
    );
    expect(theirs.code).to.equal(GrpcStatus.NOT_FOUND);
    expect(unknown.code).to.equal(GrpcStatus.NOT_FOUND);
    expect(theirs.details.replace('"sql"', '"X"')).to.equal(unknown.details.replace('"nope"', '"X"'));
    expect((await err(beta.getAdapter("sql"))).code).to.equal(GrpcStatus.NOT_FOUND);
    expect((await beta.listAdapters()).adapters).to.deep.equal([]);
    expect((await err(beta.deleteAdapter("sql"))).code).to.equal(GrpcStatus.NOT_FOUND);
    // The same name is free for the other tenant.
    await beta.registerAdapter("sql", adapterDir("tiny-llama", "math-r4-mlp"));
    expect((await beta.getAdapter("sql")).rank).to.equal(4);
  });

  it("requires a known API key when keys are configured", async () => {
    expect((await err(anonymous.listAdapters())).code).to.equal(GrpcStatus.UNAUTHENTICATED);
    const stranger = new LoraMeshClient({ address: cluster.routerAddress, apiKey: "wrong" });
    expect((await err(stranger.listAdapters())).code).to.equal(GrpcStatus.UNAUTHENTICATED);
    stranger.close();
  });

  it("refuses a malformed adapter at registration with the reason, and keeps nothing of it", async () => {
    const broken = join(scratch, "broken");
    cpSync(adapterDir("tiny-llama", "chat-r16-all"), broken, { recursive: true });
    const weights = join(broken, "adapter_model.safetensors");
    writeFileSync(weights, readFileSync(weights).subarray(0, 1000));
    const e = await err(alpha.registerAdapter("chat", broken));
    expect(e.code).to.equal(GrpcStatus.INVALID_ARGUMENT);
    expect(e.details).to.match(/truncated/);
    const dora = join(scratch, "dora");
    cpSync(adapterDir("tiny-llama", "sql-r8"), dora, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(dora, "adapter_config.json"), "utf8")) as Record<string, unknown>;
    writeFileSync(join(dora, "adapter_config.json"), JSON.stringify({ ...cfg, use_dora: true }));
    expect((await err(alpha.registerAdapter("chat", dora))).details).to.match(/use_dora/);
    expect((await alpha.listAdapters()).adapters.map((a) => a.name)).to.deep.equal(["sql"]);
    // The name was never taken: a good adapter registers under it.
    await alpha.registerAdapter("chat", adapterDir("tiny-llama", "chat-r16-all"));
    expect((await alpha.listAdapters()).adapters.map((a) => a.name)).to.deep.equal(["chat", "sql"]);
    expect((await err(alpha.registerAdapter("chat", adapterDir("tiny-llama", "chat-r16-all")))).code).to.equal(
      GrpcStatus.ALREADY_EXISTS,
    );
  });

  it("rejects bad requests with typed errors: no prompt, a prompt too long, a bad adapter name", async () => {
    const noPrompt = await err(alpha.complete({ prompt: undefined, sampling: greedy }));
    expect(noPrompt.code).to.equal(GrpcStatus.INVALID_ARGUMENT);
    const tooLong = await err(
      alpha.complete({
        prompt: { $case: "tokenIds", value: { ids: Array.from({ length: 600 }, () => 5) } },
        sampling: greedy,
      }),
    );
    expect(tooLong.code).to.equal(GrpcStatus.INVALID_ARGUMENT);
    expect(tooLong.details).to.match(/maximum sequence length/);
    expect((await err(alpha.registerAdapter("bad name!", adapterDir("tiny-llama", "sql-r8")))).code).to.equal(
      GrpcStatus.INVALID_ARGUMENT,
    );
  });

  it("plans capacity from the live registry and traffic (loramesh plan --provisioner)", async () => {
    const provisioner = cluster.processes.find((p) => p.service === "provisioner")?.address as string;
    const result = spawnSync(
      process.execPath,
      [join(REPO_ROOT, "packages", "cli", "dist", "bin.js"), "plan", "--provisioner", provisioner, "--json"],
      { encoding: "utf8", timeout: 30_000, env: { ...process.env, LORAMESH_CLUSTER_TOKEN: cluster.clusterToken } },
    );
    const plan = JSON.parse(result.stdout) as { adapters: number; loraServers: number; coverage: number };
    // The adapters registered above (the malformed one left nothing behind).
    expect(plan.adapters).to.equal(await redisAdapterCount(cluster.redisUrl));
    expect(plan.adapters).to.be.greaterThan(0);
    expect(plan.loraServers).to.be.at.least(1);
    expect(plan.coverage).to.be.greaterThan(0);
  });

  it("refuses the deprecated plan --redis-url alone with a pointer to --provisioner (the CLI reads no Redis)", () => {
    const result = spawnSync(
      process.execPath,
      [join(REPO_ROOT, "packages", "cli", "dist", "bin.js"), "plan", "--redis-url", cluster.redisUrl, "--json"],
      { encoding: "utf8", timeout: 30_000 },
    );
    expect(result.status).to.not.equal(0);
    expect(result.stdout).to.equal("");
    expect(result.stderr).to.contain("--provisioner HOST:PORT");
  });

  it("deletes an adapter everywhere", async () => {
    await alpha.deleteAdapter("chat");
    expect((await err(alpha.getAdapter("chat"))).code).to.equal(GrpcStatus.NOT_FOUND);
    const gone = await err(
      alpha.complete({ prompt: { $case: "tokenIds", value: { ids: promptIds } }, adapter: "chat", sampling: greedy }),
    );
    expect(gone.code).to.equal(GrpcStatus.NOT_FOUND);
  });
});
