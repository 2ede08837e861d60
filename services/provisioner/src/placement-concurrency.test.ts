import { expect } from "chai";
import { join } from "node:path";
import { credentials } from "@grpc/grpc-js";
import {
  captureLogger,
  GOLDEN_DIR,
  startTestGrpcServer,
  startTestRedis,
  type TestGrpcServer,
  type TestRedis,
} from "@loramesh/testing";
import {
  adapterQueueName,
  createRedis,
  REDIS_KEYS as KEYS,
  redisOptionsFromUrl,
  unary,
  type AdapterJobData,
} from "@loramesh/mesh";
import type { ServiceInstance } from "@loramesh/core";
import {
  ExecutorInfo,
  ExecutorKind,
  ProvisionerServiceClient,
  type RegisterExecutorRequest,
  type RegisterExecutorResponse,
  type TenantRegisterAdapterRequest,
  type TenantRegisterAdapterResponse,
} from "@loramesh/proto";
import { Queue } from "bullmq";
import { createProvisionerServices } from "./provisioner-service";
import { PlacementStore } from "./placement-store";

const MODEL = join(GOLDEN_DIR, "models", "tiny-llama");
const ADAPTERS = ["big-r64", "chat-r16-all", "math-r4-mlp", "pattern-r8", "rslora-r32", "sql-r8"];
const CAPACITY = 1_000_000;

describe("placement under concurrent provisioners (real Redis, two provisioners)", function () {
  this.timeout(60_000);
  let redis: TestRedis;
  const instances: ServiceInstance[] = [];
  const servers: TestGrpcServer[] = [];
  const clients: ProvisionerServiceClient[] = [];

  before(async () => {
    redis = await startTestRedis();
    for (let i = 0; i < 2; i++) {
      const instance = await createProvisionerServices({
        redisUrl: redis.url,
        heartbeatTtlMs: 60_000,
        modelDir: MODEL,
        logger: captureLogger(),
        policy: "rank-aware+rebalancing",
        // Both decide all the time, so their passes overlap.
        reconcileIntervalMs: 20,
        rebalanceIntervalMs: 100,
      });
      instances.push(instance);
      const server = await startTestGrpcServer(instance.services);
      servers.push(server);
      clients.push(new ProvisionerServiceClient(server.address, credentials.createInsecure()));
    }
  });

  after(async () => {
    for (const c of clients) c.close();
    for (const s of servers) await s.stop();
    for (const i of instances) await i.close();
    await redis.stop();
  });

  it("compare-and-set lets exactly one of two decisions on the same epoch through", async () => {
    const a = new PlacementStore(redis.client());
    const other = createRedis(redis.url);
    try {
      const b = new PlacementStore(other);
      const epoch = await a.epoch();
      const results = await Promise.all([
        a.compareAndSetTargets(epoch, [{ adapterId: "x", add: ["e1"], remove: [] }]),
        b.compareAndSetTargets(epoch, [{ adapterId: "x", add: ["e2"], remove: [] }]),
      ]);
      expect(results.filter((r) => r !== undefined)).to.have.length(1);
      expect(await a.targets("x")).to.have.length(1);
      // The loser re-reads and decides again: now both are there, nothing was lost.
      const winner = results[0] === undefined ? "e2" : "e1";
      const loser = winner === "e1" ? "e2" : "e1";
      expect(await a.compareAndSetTargets(await a.epoch(), [{ adapterId: "x", add: [loser], remove: [] }])).to.be.a(
        "number",
      );
      expect(await a.targets("x")).to.deep.equal(["e1", "e2"]);
      await redis.client().del(KEYS.targets("x"));
    } finally {
      other.disconnect();
    }
  });

  it("never overfills a LoRA server or drops an adapter while two provisioners place at once", async () => {
    // Three LoRA servers, registered through different provisioners.
    for (let i = 0; i < 3; i++) {
      const client = clients[i % 2] as ProvisionerServiceClient;
      await unary<RegisterExecutorRequest, RegisterExecutorResponse>(client.registerExecutor.bind(client), client, {
        executor: ExecutorInfo.fromPartial({
          executorId: `lora-${i}`,
          kind: ExecutorKind.EXECUTOR_KIND_LORA_SERVER,
          address: `127.0.0.1:${9000 + i}`,
          hostId: "h",
          adapterCapacityBytes: CAPACITY,
          maxRank: 64,
        }),
      });
    }
    // Twelve adapters registered at once, half through each provisioner.
    const registrations = ADAPTERS.flatMap((name, i) =>
      [0, 1].map((copy) => {
        const client = clients[(i + copy) % 2] as ProvisionerServiceClient;
        return unary<TenantRegisterAdapterRequest, TenantRegisterAdapterResponse>(
          client.registerAdapter.bind(client),
          client,
          {
            tenant: `tenant${copy}`,
            name,
            source: { source: { $case: "localDir", value: join(GOLDEN_DIR, "adapters", "tiny-llama", name) } },
          },
        );
      }),
    );
    const registered = await Promise.all(registrations);
    await new Promise((r) => setTimeout(r, 500)); // more overlapping passes of both provisioners

    const r = redis.client();
    const ids = await r.smembers(KEYS.adapters);
    expect(ids).to.have.length(12);
    const used = new Map<string, number>();
    for (const { adapter } of registered) {
      const targets = await r.smembers(KEYS.targets(adapter!.adapterId));
      expect(targets.length, `${adapter!.adapterId} has a LoRA server`).to.be.greaterThan(0);
      for (const t of targets) {
        used.set(t, (used.get(t) ?? 0) + adapter!.sizeBytes);
        // Every target has its load job: no decision was applied without its work.
        const queue = new Queue<AdapterJobData>(adapterQueueName(t), { connection: redisOptionsFromUrl(redis.url) });
        const jobs = await queue.getJobs(["waiting", "delayed", "active", "completed", "failed", "waiting-children"]);
        await queue.close();
        expect(
          jobs.some((j) => j.data.adapterId === adapter!.adapterId && j.data.kind === "load"),
          `load job of ${adapter!.adapterId} on ${t}`,
        ).to.equal(true);
      }
    }
    for (const [server, bytes] of used) expect(bytes, server).to.be.at.most(CAPACITY);
    expect(used.size).to.equal(3);
  });
});
