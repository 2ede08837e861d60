import { expect } from "chai";
import { credentials, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { join } from "node:path";
import {
  captureLogger,
  GOLDEN_DIR,
  startTestGrpcServer,
  startTestRedis,
  type TestGrpcServer,
  type TestRedis,
} from "@loramesh/testing";
import {
  ExecutorKind,
  GetPlacementRequest,
  HeartbeatRequest,
  ProvisionerServiceClient,
  RegisterExecutorRequest,
  type HeartbeatResponse,
  type Placement,
  type RegisterExecutorResponse,
} from "@loramesh/proto";
import { createProvisionerServices } from "./provisioner-service";
import type { ServiceInstance } from "@loramesh/core";
import { ExecutorInfo } from "@loramesh/proto";
import { REDIS_KEYS } from "@loramesh/mesh";

const MODEL = join(GOLDEN_DIR, "models", "tiny-llama");
const executor = (fields: Partial<ExecutorInfo>): ExecutorInfo => ExecutorInfo.fromPartial(fields);

function call<Req, Res>(
  fn: (req: Req, md: Metadata, cb: (err: ServiceError | null, res: Res) => void) => unknown,
  request: Req,
): Promise<Res> {
  return new Promise((resolve, reject) =>
    fn(request, new Metadata(), (err, res) => (err ? reject(err) : resolve(res))),
  );
}

describe("provisioner executor registry (real Redis, real gRPC)", function () {
  this.timeout(30_000);
  let redis: TestRedis;
  let instance: ServiceInstance;
  let server: TestGrpcServer;
  let client: ProvisionerServiceClient;

  before(async () => {
    redis = await startTestRedis();
    instance = await createProvisionerServices({
      redisUrl: redis.url,
      heartbeatTtlMs: 2_000,
      modelDir: MODEL,
      logger: captureLogger(),
    });
    server = await startTestGrpcServer(instance.services);
    client = new ProvisionerServiceClient(server.address, credentials.createInsecure());
  });

  after(async () => {
    client.close();
    await server.stop();
    await instance.close();
    await redis.stop();
  });

  it("registers an executor, keeps it alive with heartbeats and drops it when they stop", async () => {
    const registered = await call<RegisterExecutorRequest, RegisterExecutorResponse>(
      client.registerExecutor.bind(client),
      {
        executor: executor({
          executorId: "lora-1",
          kind: ExecutorKind.EXECUTOR_KIND_LORA_SERVER,
          address: "127.0.0.1:1",
          hostId: "h",
        }),
      },
    );
    expect(registered.ttlMs).to.equal(2_000);
    expect(registered.heartbeatIntervalMs).to.equal(666);
    const before = await call<GetPlacementRequest, Placement>(client.getPlacement.bind(client), { adapterIds: [] });
    expect(before.executors.map((e) => e.executorId)).to.deep.equal(["lora-1"]);
    expect(before.epoch).to.be.greaterThan(0);

    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 250));
      const beat = await call<HeartbeatRequest, HeartbeatResponse>(client.heartbeat.bind(client), {
        executorId: "lora-1",
        load: { active: 1, queued: 0, adapterBytesUsed: 10, tokensPerSecond: 5, rankWeightedLoad: 40 },
        residentAdapterIds: ["t/a"],
        adapterRequests: {},
      });
      expect(beat.known).to.equal(true);
    }
    expect(await redis.client().hget(REDIS_KEYS.executor("lora-1"), "resident")).to.equal('["t/a"]');

    // Heartbeats stop: the executor leaves placement once its TTL runs out (waited for, not timed).
    let after = await call<GetPlacementRequest, Placement>(client.getPlacement.bind(client), { adapterIds: [] });
    for (let i = 0; i < 100 && after.executors.length > 0; i++) {
      await new Promise((r) => setTimeout(r, 200));
      after = await call<GetPlacementRequest, Placement>(client.getPlacement.bind(client), { adapterIds: [] });
    }
    expect(after.executors).to.deep.equal([]);
    expect(after.epoch).to.be.greaterThan(before.epoch);
    const late = await call<HeartbeatRequest, HeartbeatResponse>(client.heartbeat.bind(client), {
      executorId: "lora-1",
      residentAdapterIds: [],
      adapterRequests: {},
    });
    expect(late.known).to.equal(false);
  });

  it("refuses an executor without id, kind or address as INVALID_ARGUMENT", async () => {
    const err = (await call<RegisterExecutorRequest, RegisterExecutorResponse>(client.registerExecutor.bind(client), {
      executor: executor({ executorId: "bad id!", kind: ExecutorKind.EXECUTOR_KIND_BASE_WORKER, address: "x:1" }),
    }).catch((e: unknown) => e)) as ServiceError;
    expect(err.code).to.equal(status.INVALID_ARGUMENT);
    expect(err.details).to.contain("executor_id");
    const noKind = (await call<RegisterExecutorRequest, RegisterExecutorResponse>(
      client.registerExecutor.bind(client),
      {
        executor: executor({ executorId: "w1", kind: ExecutorKind.EXECUTOR_KIND_UNSPECIFIED, address: "x:1" }),
      },
    ).catch((e: unknown) => e)) as ServiceError;
    expect(noKind.code).to.equal(status.INVALID_ARGUMENT);
  });

  it("fails to start with UNAVAILABLE when Redis cannot be reached", async () => {
    const err = await createProvisionerServices({
      redisUrl: "unix:/nonexistent/redis.sock",
      heartbeatTtlMs: 1000,
      modelDir: MODEL,
      logger: captureLogger(),
    }).catch((e: unknown) => e);
    expect((err as Error).name).to.equal("UnavailableError");
    expect((err as Error).message).to.contain("cannot reach Redis");
  });
});
