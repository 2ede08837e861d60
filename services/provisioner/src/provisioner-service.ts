import {
  InvalidArgumentError,
  redisConnectionOptions,
  unaryHandler,
  UnavailableError,
  type Logger,
  type ServiceInstance,
} from "@loramesh/core";
import { ProvisionerServiceService, SERVICE_NAMES, type ProvisionerServiceServer } from "@loramesh/proto";
import { Redis, type RedisOptions } from "ioredis";
import { ExecutorRegistry } from "./executor-registry";

export interface ProvisionerOptions {
  redisUrl: string;
  heartbeatTtlMs: number;
  logger: Logger;
}

/**
 * The provisioner's gRPC service over Redis. Executor registration, heartbeats and placement
 * lookup work now; the adapter registry, placement policy and BullMQ jobs arrive with the mesh
 * issue (their methods answer UNIMPLEMENTED until then).
 */
export async function createProvisionerServices(options: ProvisionerOptions): Promise<ServiceInstance> {
  const { logger } = options;
  const target = redisConnectionOptions(options.redisUrl);
  const common: RedisOptions = { lazyConnect: true, maxRetriesPerRequest: 3 };
  const redis = "path" in target ? new Redis({ ...common, path: target.path }) : new Redis(target.url, common);
  redis.on("error", (err: Error) => logger.warn("redis connection error", { error: err.message }));
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    redis.disconnect();
    throw new UnavailableError(`cannot reach Redis at ${options.redisUrl}: ${(err as Error).message}`, { cause: err });
  }
  const executors = new ExecutorRegistry(redis, options.heartbeatTtlMs);

  const implementation: Pick<ProvisionerServiceServer, "registerExecutor" | "heartbeat" | "getPlacement"> = {
    registerExecutor: unaryHandler(logger, async (request) => {
      if (!request.executor) throw new InvalidArgumentError("executor is required");
      await executors.register(request.executor);
      logger.info("executor registered", {
        executorId: request.executor.executorId,
        address: request.executor.address,
      });
      return { heartbeatIntervalMs: Math.floor(executors.ttlMs / 3), ttlMs: executors.ttlMs };
    }),
    heartbeat: unaryHandler(logger, async (request) => {
      const known = await executors.heartbeat(request.executorId, request.load, request.residentAdapterIds);
      return { known, placementEpoch: await executors.epoch() };
    }),
    getPlacement: unaryHandler(logger, async () => {
      const live = await executors.live();
      return { epoch: await executors.epoch(), adapters: [], executors: live.map((e) => e.info) };
    }),
  };

  return {
    services: [{ name: SERVICE_NAMES.provisioner[0], definition: ProvisionerServiceService, implementation }],
    close: async () => {
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
