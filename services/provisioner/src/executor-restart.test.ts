// A LoRA server restarted under its executor id gets its adapters loaded again, however its
// restart and its old registration's expiry interleave (the fault test's kill-then-stop case).
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
import { adapterQueueName, REDIS_KEYS as KEYS, redisOptionsFromUrl, unary, type AdapterJobData } from "@loramesh/mesh";
import type { ServiceInstance } from "@loramesh/core";
import {
  ExecutorInfo,
  ExecutorKind,
  ProvisionerServiceClient,
  type HeartbeatRequest,
  type HeartbeatResponse,
  type RegisterExecutorRequest,
  type RegisterExecutorResponse,
  type TenantRegisterAdapterRequest,
  type TenantRegisterAdapterResponse,
} from "@loramesh/proto";
import { Queue } from "bullmq";
import { createProvisionerServices } from "./provisioner-service";

const MODEL = join(GOLDEN_DIR, "models", "tiny-llama");
const SERVER = "lora-0";

describe("provisioner: a LoRA server restarted under its id is given its adapters again (real Redis, gRPC)", function () {
  this.timeout(60_000);
  let redis: TestRedis;
  let instance: ServiceInstance;
  let server: TestGrpcServer;
  let client: ProvisionerServiceClient;
  let queue: Queue<AdapterJobData>;
  let adapterId = "";

  const register = (): Promise<RegisterExecutorResponse> =>
    unary<RegisterExecutorRequest, RegisterExecutorResponse>(client.registerExecutor.bind(client), client, {
      executor: ExecutorInfo.fromPartial({
        executorId: SERVER,
        kind: ExecutorKind.EXECUTOR_KIND_LORA_SERVER,
        address: "127.0.0.1:9000",
        hostId: "h",
        adapterCapacityBytes: 100_000_000,
        maxRank: 256,
      }),
    });
  const heartbeat = (resident: string[]): Promise<HeartbeatResponse> =>
    unary<HeartbeatRequest, HeartbeatResponse>(client.heartbeat.bind(client), client, {
      executorId: SERVER,
      residentAdapterIds: resident,
      adapterRequests: {},
    });
  /** Ids of the adapter's load jobs on the server's queue, in any state. */
  const loadJobs = async (): Promise<string[]> =>
    (await queue.getJobs(["waiting", "delayed", "active", "completed", "failed", "prioritized"]))
      .filter((j) => j.data.kind === "load" && j.data.adapterId === adapterId)
      .map((j) => j.id as string)
      .sort();

  before(async () => {
    redis = await startTestRedis();
    instance = await createProvisionerServices({
      redisUrl: redis.url,
      heartbeatTtlMs: 60_000,
      modelDir: MODEL,
      logger: captureLogger(),
      // No periodic pass: nothing sweeps expired executors unless the test's calls do.
      reconcileIntervalMs: 3_600_000,
    });
    server = await startTestGrpcServer(instance.services);
    client = new ProvisionerServiceClient(server.address, credentials.createInsecure());
    queue = new Queue<AdapterJobData>(adapterQueueName(SERVER), { connection: redisOptionsFromUrl(redis.url) });
    await register();
    const { adapter } = await unary<TenantRegisterAdapterRequest, TenantRegisterAdapterResponse>(
      client.registerAdapter.bind(client),
      client,
      {
        tenant: "default",
        name: "sql-r8",
        source: { source: { $case: "localDir", value: join(GOLDEN_DIR, "adapters", "tiny-llama", "sql-r8") } },
      },
    );
    adapterId = adapter?.adapterId ?? "";
    // The server loaded it and said so.
    await heartbeat([adapterId]);
    expect(await redis.client().smembers(KEYS.placement(adapterId))).to.deep.equal([SERVER]);
    expect(await loadJobs()).to.have.length(1);
  });

  after(async () => {
    await queue?.close();
    client?.close();
    await server?.stop();
    await instance?.close();
    await redis?.stop();
  });

  /** The restarted process registers, then reports that it holds nothing. */
  async function restartedServerHoldsNothing(): Promise<void> {
    const before = await loadJobs();
    await register();
    await heartbeat([]);
    expect(await redis.client().smembers(KEYS.placement(adapterId)), "holders").to.deep.equal([]);
    expect(await redis.client().smembers(KEYS.targets(adapterId)), "targets").to.deep.equal([SERVER]);
    const after = await loadJobs();
    expect(
      after.filter((id) => !before.includes(id)),
      "a new load job for the restarted server",
    ).to.have.length(1);
    // It loads it (the new job), and is a holder again.
    await heartbeat([adapterId]);
  }

  it("restarted before its heartbeat TTL passed (its old registration still lives)", async () => {
    await restartedServerHoldsNothing();
  });

  it("restarted after its registration expired but before any sweep noticed the expiry", async () => {
    // What the key's TTL does; no reconcile pass runs in between, so the id is still listed.
    await redis.client().del(KEYS.executor(SERVER));
    expect(await redis.client().sismember(KEYS.executors, SERVER)).to.equal(1);
    await restartedServerHoldsNothing();
  });
});
