/**
 * Wiring of the provisioner process: Redis connections, the registries, the job queues and the
 * move flow, the domain object, its handlers, metrics and the reconcile timer. No rules live here
 * (see provisioner.ts) and no protobuf mapping (see provisioner-handlers.ts).
 */
import type { Logger, ServiceInstance } from "@loramesh/core";
import { loadModelConfig } from "@loramesh/formats";
import { AdapterJobQueues, connectRedis, REDIS_KEYS, type AdapterJobData } from "@loramesh/mesh";
import { policyByName } from "@loramesh/policy";
import { ProvisionerServiceService, SERVICE_NAMES } from "@loramesh/proto";
import { AdapterCache, defaultCacheDir } from "@loramesh/sources";
import { AdapterRegistry } from "./adapter-registry";
import { ExecutorRegistry } from "./executor-registry";
import { Migrations } from "./migrations";
import { PlacementChanges } from "./placement-changes";
import { PlacementStore } from "./placement-store";
import { RemoteAdapters } from "./remote-adapters";
import { Provisioner } from "./provisioner";
import { provisionerHandlers } from "./provisioner-handlers";
import { provisionerMetrics } from "./provisioner-metrics";
import { TrafficShares } from "./traffic";

export interface ProvisionerOptions {
  redisUrl: string;
  heartbeatTtlMs: number;
  /** Base model directory: registration validates adapters against its config. */
  modelDir: string;
  logger: Logger;
  /** LoRA-server placement policy: random, round-robin, rank-aware, rank-aware+rebalancing. */
  policy?: string;
  /** Most LoRA servers a hot adapter is replicated to (default 4). */
  maxReplicas?: number;
  /** How often placement is reconciled against live executors. */
  reconcileIntervalMs?: number;
  /** How often the rebalancing policy may move adapters (when imbalance crosses its threshold). */
  rebalanceIntervalMs?: number;
  /** How long a moved adapter's source keeps it after routing switched, for work already sent. */
  drainMs?: number;
  /** Half-life of the traffic statistics placement and planning use. */
  trafficHalfLifeMs?: number;
  /** Planner targets: coverage (resident-on-arrival probability) and mean TPOT. */
  planCoverage?: number;
  planTpotMs?: number;
  /** Directories registration may read adapters from; empty: any. */
  adapterRoots?: string[];
  /** Largest adapter weights file registration accepts. */
  maxAdapterBytes?: number;
  /** The host's adapter cache (remote sources are fetched into it at registration). */
  adapterCacheDir?: string;
  adapterCacheBytes?: number;
}

export async function createProvisionerServices(options: ProvisionerOptions): Promise<ServiceInstance> {
  const { logger } = options;
  const model = loadModelConfig(options.modelDir);
  const redis = await connectRedis(options.redisUrl);
  const changes = await PlacementChanges.open(options.redisUrl);
  const executors = new ExecutorRegistry(redis, options.heartbeatTtlMs);
  const adapters = new AdapterRegistry(redis);
  const placement = new PlacementStore(redis);
  const jobs = new AdapterJobQueues(options.redisUrl);
  const policy = policyByName(options.policy ?? "rank-aware+rebalancing", 1, { maxReplicas: options.maxReplicas });
  const recordJob = async (data: AdapterJobData, jobId: string): Promise<void> => {
    const multi = redis.multi().hset(REDIS_KEYS.jobExecutors, jobId, data.executorId);
    if (data.kind === "load") multi.hset(REDIS_KEYS.adapterJobs(data.adapterId), data.executorId, jobId);
    await multi.exec();
  };
  const migrations = new Migrations(options.redisUrl, placement, jobs, recordJob, options.drainMs ?? 3_000, logger);
  const provisioner = new Provisioner({
    redis,
    executors,
    adapters,
    placement,
    jobs,
    migrations,
    recordJob,
    policy,
    traffic: new TrafficShares(redis, options.trafficHalfLifeMs ?? 30_000),
    tuning: {
      rebalanceIntervalMs: options.rebalanceIntervalMs ?? 30_000,
      planCoverage: options.planCoverage ?? 0.95,
      planTpotMs: options.planTpotMs ?? 100,
    },
    model,
    sources: {
      roots: options.adapterRoots ?? [],
      limits: options.maxAdapterBytes !== undefined ? { maxWeightsBytes: options.maxAdapterBytes } : {},
    },
    remote: new RemoteAdapters(
      new AdapterCache({
        root: options.adapterCacheDir ?? defaultCacheDir(),
        limitBytes: options.adapterCacheBytes ?? 10 * 1024 ** 3,
      }),
      model,
    ),
    logger,
  });
  if ((options.adapterRoots ?? []).length === 0)
    logger.warn("no --adapter-roots: adapters may be registered from any directory this process can read");
  provisionerMetrics(redis, executors, adapters, placement, () => provisioner.plan());
  logger.info("placement policy", { policy: policy.name });
  const reconcileTimer = setInterval(() => {
    provisioner
      .reconcile()
      .catch((err: unknown) => logger.warn("placement reconcile failed", { error: (err as Error).message }));
  }, options.reconcileIntervalMs ?? 1_000);
  const implementation = provisionerHandlers({
    provisioner,
    changes,
    jobs,
    heartbeatTtlMs: options.heartbeatTtlMs,
    logger,
  });
  return {
    services: [{ name: SERVICE_NAMES.provisioner[0], definition: ProvisionerServiceService, implementation }],
    // Without Redis the provisioner cannot answer: health says so until the connection is back.
    watchHealth: (setServing) => {
      redis.on("close", () => {
        logger.warn("lost the connection to Redis; NOT_SERVING until it is back");
        setServing(false);
      });
      redis.on("ready", () => {
        logger.info("connected to Redis again; SERVING");
        setServing(true);
      });
    },
    close: async () => {
      clearInterval(reconcileTimer);
      await migrations.close();
      await jobs.close(); // queues and their QueueEvents connections
      changes.close();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
