// A worker that cannot reach a LoRA server reports it; the server may still heartbeat (a partition
// is not a death), so only this report gives its adapters a replica the worker can reach.
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
import { InvalidArgumentError } from "@loramesh/errors";
import {
  ExecutorInfo,
  ExecutorKind,
  ProvisionerServiceClient,
  type RegisterExecutorRequest,
  type RegisterExecutorResponse,
  type ReportUnreachableRequest,
  type ReportUnreachableResponse,
  type TenantRegisterAdapterRequest,
  type TenantRegisterAdapterResponse,
} from "@loramesh/proto";
import { Queue } from "bullmq";
import { createProvisionerServices } from "./provisioner-service";

const MODEL = join(GOLDEN_DIR, "models", "tiny-llama");
const SERVERS = ["lora-0", "lora-1"];

describe("provisioner: ReportUnreachable gives an adapter a replica the reporting worker can reach (real Redis, gRPC)", function () {
  this.timeout(60_000);
  let redis: TestRedis;
  let instance: ServiceInstance;
  let server: TestGrpcServer;
  let client: ProvisionerServiceClient;
  let adapterId = "";

  const report = (executorId: string, adapterIds: string[]): Promise<ReportUnreachableResponse> =>
    unary<ReportUnreachableRequest, ReportUnreachableResponse>(client.reportUnreachable.bind(client), client, {
      reporterId: "worker-0",
      executorId,
      adapterIds,
    });
  const targets = async (): Promise<string[]> => (await redis.client().smembers(KEYS.targets(adapterId))).sort();
  /** The adapter's load jobs on one server's queue, in any state. */
  async function loadJobs(executorId: string): Promise<string[]> {
    const queue = new Queue<AdapterJobData>(adapterQueueName(executorId), {
      connection: redisOptionsFromUrl(redis.url),
    });
    try {
      return (await queue.getJobs(["waiting", "delayed", "active", "completed", "failed", "prioritized"]))
        .filter((j) => j.data.kind === "load" && j.data.adapterId === adapterId)
        .map((j) => j.id as string);
    } finally {
      await queue.close();
    }
  }

  before(async () => {
    redis = await startTestRedis();
    instance = await createProvisionerServices({
      redisUrl: redis.url,
      heartbeatTtlMs: 60_000,
      modelDir: MODEL,
      logger: captureLogger(),
      maxReplicas: 1,
      reconcileIntervalMs: 3_600_000,
    });
    server = await startTestGrpcServer(instance.services);
    client = new ProvisionerServiceClient(server.address, credentials.createInsecure());
    for (const [i, executorId] of SERVERS.entries())
      await unary<RegisterExecutorRequest, RegisterExecutorResponse>(client.registerExecutor.bind(client), client, {
        executor: ExecutorInfo.fromPartial({
          executorId,
          kind: ExecutorKind.EXECUTOR_KIND_LORA_SERVER,
          address: `127.0.0.1:${9000 + i}`,
          hostId: `h${i}`,
          adapterCapacityBytes: 100_000_000,
          maxRank: 256,
        }),
      });
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
  });

  after(async () => {
    client?.close();
    await server?.stop();
    await instance?.close();
    await redis?.stop();
  });

  it("an adapter whose only target is unreachable gets one more target (the other server) and a load job there; the unreachable one stays", async () => {
    const [holder] = await targets();
    expect(await targets(), "placed once").to.have.length(1);
    const other = SERVERS.find((s) => s !== holder) as string;
    expect(await loadJobs(other)).to.deep.equal([]);
    const { loadJobIds } = await report(holder as string, [adapterId]);
    expect(loadJobIds).to.have.length(1);
    expect(await targets()).to.deep.equal([...SERVERS].sort());
    expect(await loadJobs(other)).to.deep.equal(loadJobIds);
  });

  it("is idempotent: a second report, or one about a server with another target beside it, starts nothing", async () => {
    for (const s of SERVERS) expect((await report(s, [adapterId])).loadJobIds, s).to.deep.equal([]);
    expect(await targets()).to.deep.equal([...SERVERS].sort());
  });

  it("unknown adapters start nothing; a report naming no server is INVALID_ARGUMENT", async () => {
    expect((await report("lora-0", ["default.nope.0000"])).loadJobIds).to.deep.equal([]);
    const err = await report("", [adapterId]).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(InvalidArgumentError);
  });
});
