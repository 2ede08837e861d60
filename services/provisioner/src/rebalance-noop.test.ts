import { expect } from "chai";
import { join } from "node:path";
import { credentials } from "@grpc/grpc-js";
import {
  captureLogger,
  GOLDEN_DIR,
  startTestGrpcServer,
  startTestRedis,
  waitFor,
  type CapturedLogger,
  type TestGrpcServer,
  type TestRedis,
} from "@loramesh/testing";
import { createRedis, REDIS_KEYS as KEYS, unary } from "@loramesh/mesh";
import type { ServiceInstance } from "@loramesh/core";
import {
  ExecutorInfo,
  ExecutorKind,
  LoraMode,
  ProvisionerServiceClient,
  type RegisterExecutorRequest,
  type RegisterExecutorResponse,
  type TenantRegisterAdapterRequest,
  type TenantRegisterAdapterResponse,
} from "@loramesh/proto";
import type { Redis } from "ioredis";
import { createProvisionerServices } from "./provisioner-service";

const MODEL = join(GOLDEN_DIR, "models", "tiny-llama");
const ADAPTERS = ["big-r64", "chat-r16-all", "math-r4-mlp", "pattern-r8", "rslora-r32", "sql-r8"];

/**
 * The hybrid case's layout (one hybrid worker, one LoRA server) under rank-aware+rebalancing: a
 * rebalance there has nowhere to move anything, and must then leave placement untouched (m15v).
 */
describe("a rebalance that moves nothing (real Redis, a real provisioner)", function () {
  this.timeout(60_000);
  let redis: TestRedis;
  let instance: ServiceInstance;
  let server: TestGrpcServer;
  let client: ProvisionerServiceClient;
  let logger: CapturedLogger;
  let subscriber: Redis;

  before(async () => {
    redis = await startTestRedis();
    logger = captureLogger();
    instance = await createProvisionerServices({
      redisUrl: redis.url,
      heartbeatTtlMs: 60_000,
      modelDir: MODEL,
      logger,
      policy: "rank-aware+rebalancing",
      reconcileIntervalMs: 20,
      rebalanceIntervalMs: 50,
    });
    server = await startTestGrpcServer(instance.services);
    client = new ProvisionerServiceClient(server.address, credentials.createInsecure());
    subscriber = createRedis(redis.url);
  });

  after(async () => {
    subscriber.disconnect();
    client.close();
    await server.stop();
    await instance.close();
    await redis.stop();
  });

  const rebalances = (): number => logger.records.filter((r) => r["msg"] === "rebalance: nothing to move").length;

  it("bumps no placement epoch, publishes nothing and starts no move", async () => {
    const executors = [
      { executorId: "lora-0", kind: ExecutorKind.EXECUTOR_KIND_LORA_SERVER, loraMode: LoraMode.LORA_MODE_UNSPECIFIED },
      { executorId: "worker-0", kind: ExecutorKind.EXECUTOR_KIND_BASE_WORKER, loraMode: LoraMode.LORA_MODE_HYBRID },
    ];
    for (const [i, e] of executors.entries())
      await unary<RegisterExecutorRequest, RegisterExecutorResponse>(client.registerExecutor.bind(client), client, {
        executor: ExecutorInfo.fromPartial({
          ...e,
          address: `127.0.0.1:${9100 + i}`,
          hostId: "h",
          adapterCapacityBytes: 64 << 20,
          maxRank: 64,
        }),
      });
    for (const name of ADAPTERS)
      await unary<TenantRegisterAdapterRequest, TenantRegisterAdapterResponse>(
        client.registerAdapter.bind(client),
        client,
        {
          tenant: "t",
          name,
          source: { source: { $case: "localDir", value: join(GOLDEN_DIR, "adapters", "tiny-llama", name) } },
        },
      );
    const r = redis.client();
    // Settled: every adapter is placed on both executors and a rebalance has since found nothing to do.
    await waitFor(async () => {
      const ids = await r.smembers(KEYS.adapters);
      if (ids.length !== ADAPTERS.length) return undefined;
      for (const id of ids) if ((await r.smembers(KEYS.targets(id))).length !== 2) return undefined;
      return true;
    }, 20_000);
    const seen = rebalances();
    await waitFor(() => (rebalances() > seen ? true : undefined), 20_000);

    const published: string[] = [];
    subscriber.on("message", (_channel: string, message: string) => published.push(message));
    await subscriber.subscribe(KEYS.channel);
    const epoch = await r.get(KEYS.epoch);
    const targets = new Map<string, string[]>();
    for (const id of await r.smembers(KEYS.adapters)) targets.set(id, (await r.smembers(KEYS.targets(id))).sort());

    const from = rebalances();
    await waitFor(() => (rebalances() >= from + 5 ? true : undefined), 20_000);

    expect(await r.get(KEYS.epoch)).to.equal(epoch);
    expect(published).to.deep.equal([]);
    expect(await r.smembers(KEYS.moving)).to.deep.equal([]);
    for (const [id, before] of targets) expect((await r.smembers(KEYS.targets(id))).sort(), id).to.deep.equal(before);
    expect(logger.records.filter((x) => x["msg"] === "rebalancing")).to.deep.equal([]);
  });
});
