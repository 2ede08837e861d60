import { clusterClientOptions } from "@loramesh/core";
import { expect } from "chai";
import { credentials } from "@grpc/grpc-js";
import type { LocalCluster } from "@loramesh/cli";
import { createRedis, REDIS_KEYS, unary } from "@loramesh/mesh";
import {
  ExecutorKind,
  LoraServerServiceClient,
  ProvisionerServiceClient,
  type GetPlacementRequest,
  type LoraServerStats,
  type LoraServerStatsRequest,
  type MoveAdapterRequest,
  type MoveAdapterResponse,
  type Placement,
} from "@loramesh/proto";
import { LoraMeshClient } from "@loramesh/sdk";
import { golden, modelDir, registerAll, startCluster } from "./mesh-helpers";

/** Polls a condition that in-flight work makes true; fails with `what` when it never does. */
async function until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("adapter migration under load (real mesh: 1 worker, 2 LoRA servers)", function () {
  this.timeout(120_000);
  const g = golden("tiny-llama");
  const adapter = "pattern-r8";
  const goldenCase = g.cases.find((c) => c.adapter === adapter);
  let cluster: LocalCluster;
  let client: LoraMeshClient;
  let provisioner: ProvisionerServiceClient;

  before(async () => {
    cluster = await startCluster({
      modelDir: modelDir("tiny-llama"),
      mode: "disaggregated",
      workers: 1,
      loraServers: 2,
      // No automatic rebalancing here: the test moves the adapter itself.
      // One copy only: the test's own traffic would otherwise make the adapter hot and replicated
      // to both servers, leaving nowhere to move it.
      extraArgs: {
        provisioner: ["--placement-policy", "rank-aware", "--drain-ms", "1000", "--max-replicas", "1"],
      },
    });
    client = new LoraMeshClient({ address: cluster.routerAddress });
    const address = cluster.processes.find((p) => p.service === "provisioner")?.address as string;
    provisioner = new ProvisionerServiceClient(
      address,
      credentials.createInsecure(),
      clusterClientOptions(cluster.clusterToken),
    );
    await registerAll(client, "tiny-llama", [adapter]);
  });

  after(async () => {
    provisioner?.close();
    client?.close();
    await cluster?.stop();
  });

  it("moves an adapter between LoRA servers while requests stream, and loses none", async () => {
    expect(goldenCase).to.not.equal(undefined);
    const placement = async () =>
      unary<GetPlacementRequest, Placement>(provisioner.getPlacement.bind(provisioner), provisioner, {
        adapterIds: [],
      });
    const before = await placement();
    const entry = before.adapters.find((a) => a.adapterId.includes(adapter));
    expect(entry?.executorIds).to.have.length(1);
    const from = entry?.executorIds[0] as string;
    const servers = before.executors.filter((e) => e.kind === ExecutorKind.EXECUTOR_KIND_LORA_SERVER);
    const to = servers.find((e) => e.executorId !== from);
    expect(to).to.not.equal(undefined);

    // Closed-loop load: three clients send the golden request back to back until told to stop.
    let stop = false;
    const outcomes: Array<{ ok: boolean; tokens?: number[]; error?: string; endedMs: number }> = [];
    const loop = async () => {
      while (!stop) {
        try {
          const r = await client.complete({
            prompt: { $case: "tokenIds", value: { ids: g.prompts[goldenCase!.prompt]!.ids } },
            adapter,
            sampling: {
              maxTokens: g.steps,
              temperature: 0,
              topP: 1,
              topK: 0,
              stop: [],
              stopTokenIds: [],
              ignoreEos: true,
            },
          });
          outcomes.push({ ok: true, tokens: r.tokenIds, endedMs: Date.now() });
        } catch (err) {
          outcomes.push({ ok: false, error: (err as Error).message, endedMs: Date.now() });
        }
      }
    };
    let switchedAt = 0;
    let unloadedAt = 0;
    const loops = [loop(), loop(), loop()];
    try {
      // Event, not a time window: move only once a request has been seen completing.
      await until(() => outcomes.length > 0, 60_000, "a request completed before the move");

      const moved = await unary<MoveAdapterRequest, MoveAdapterResponse>(
        provisioner.moveAdapter.bind(provisioner),
        provisioner,
        {
          tenant: "default",
          name: adapter,
          fromExecutorId: from,
          toExecutorId: to!.executorId,
        },
      );
      expect(moved.moveJobId).to.match(/^move-/);
      const movedAt = Date.now();

      // Routing switches to the target, then the source unloads after the drain period.
      const redis = createRedis(cluster.redisUrl);
      try {
        const id = entry?.adapterId as string;
        while (Date.now() - movedAt < 30_000 && unloadedAt === 0) {
          const now = await placement();
          const holders = now.adapters.find((a) => a.adapterId === id)?.executorIds ?? [];
          if (switchedAt === 0 && holders.length === 1 && holders[0] === to!.executorId) switchedAt = Date.now();
          const onSource = await redis.sismember(REDIS_KEYS.executorAdapters(from), id);
          if (switchedAt > 0 && onSource === 0) unloadedAt = Date.now();
          await new Promise((r) => setTimeout(r, 50));
        }
      } finally {
        redis.disconnect();
      }
      expect(switchedAt, "routing switched to the target").to.be.greaterThan(0);
      expect(unloadedAt, "the source unloaded after draining").to.be.greaterThan(0);
      // Keep the load on until a request has been seen completing after the source let go.
      await until(() => outcomes.some((o) => o.endedMs > unloadedAt), 60_000, "a request completed after the unload");
    } finally {
      // Whatever failed above, stop the load so the test ends with its own message.
      stop = true;
      await Promise.all(loops);
    }

    const failures = outcomes.filter((o) => !o.ok);
    expect(failures.map((f) => f.error)).to.deep.equal([]);
    for (const o of outcomes) expect(o.tokens).to.deep.equal(goldenCase!.output_ids);
    // Requests finished before the switch, while draining, and after the source let go.
    expect(outcomes.some((o) => o.endedMs < switchedAt)).to.equal(true);
    expect(outcomes.some((o) => o.endedMs > unloadedAt)).to.equal(true);

    // The target did the LoRA work after the move.
    const target = new LoraServerServiceClient(
      to!.address,
      credentials.createInsecure(),
      clusterClientOptions(cluster.clusterToken),
    );
    try {
      const stats = await unary<LoraServerStatsRequest, LoraServerStats>(target.getStats.bind(target), target, {});
      expect(stats.rows).to.be.greaterThan(0);
      expect(stats.residentAdapterIds).to.include(entry?.adapterId);
    } finally {
      target.close();
    }
  });
});
