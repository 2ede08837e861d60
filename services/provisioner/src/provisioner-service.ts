/**
 * The provisioner: adapter registry per tenant, executor registry with heartbeat TTLs, placement
 * (resident sets reconciled from heartbeats, target sets chosen by a policy and turned into BullMQ
 * load/unload jobs), traffic statistics, and the placement watch stream.
 */
import { existsSync } from "node:fs";
import { isAbsolute } from "node:path";
import {
  InvalidArgumentError,
  NotFoundError,
  serverStreamHandler,
  unaryHandler,
  type Logger,
  type ServiceInstance,
} from "@loramesh/core";
import { loadAdapter, loadModelConfig, type ModelConfig } from "@loramesh/engine";
import {
  AdapterJobQueues,
  connectRedis,
  createRedis,
  internalAdapterId,
  NAME_PATTERN,
  type AdapterJobData,
} from "@loramesh/mesh";
import {
  AdapterState,
  JobState,
  ProvisionerServiceService,
  SERVICE_NAMES,
  type Adapter,
  type AdapterPlacement,
  type ExecutorInfo,
  type LoadJobStatus,
  type PlacementUpdate,
  type ProvisionerServiceServer,
} from "@loramesh/proto";
import type { Job } from "bullmq";
import type { Redis } from "ioredis";
import { AdapterRegistry, type AdapterRecord } from "./adapter-registry";
import { ExecutorRegistry } from "./executor-registry";
import { SimplePlacementPolicy, type PlacementPolicy } from "./placement-policy";
import { PlacementStore } from "./placement-store";
import { KEYS } from "./redis-keys";
import { provisionerMetrics } from "./provisioner-metrics";

export interface ProvisionerOptions {
  redisUrl: string;
  heartbeatTtlMs: number;
  /** Base model directory: registration validates adapters against its config. */
  modelDir: string;
  logger: Logger;
  policy?: PlacementPolicy;
  /** How often placement is reconciled against live executors. */
  reconcileIntervalMs?: number;
}

export async function createProvisionerServices(options: ProvisionerOptions): Promise<ServiceInstance> {
  const { logger } = options;
  const model: ModelConfig = loadModelConfig(options.modelDir);
  const redis = await connectRedis(options.redisUrl);
  const subscriber = createRedis(options.redisUrl);
  subscriber.on("error", () => undefined);
  const executors = new ExecutorRegistry(redis, options.heartbeatTtlMs);
  const adapters = new AdapterRegistry(redis);
  const placement = new PlacementStore(redis);
  const jobs = new AdapterJobQueues(options.redisUrl);
  const policy = options.policy ?? new SimplePlacementPolicy();
  const provisioner = new Provisioner(redis, executors, adapters, placement, jobs, policy, model, logger);
  provisionerMetrics(redis, executors, adapters, placement);

  // Placement watchers: one Redis subscription, fanned out to every open WatchPlacement stream.
  const watchers = new Set<() => void>();
  await subscriber.subscribe(KEYS.channel);
  subscriber.on("message", () => {
    for (const w of watchers) w();
  });
  const reconcileTimer = setInterval(() => {
    provisioner
      .reconcile()
      .catch((err: unknown) => logger.warn("placement reconcile failed", { error: (err as Error).message }));
  }, options.reconcileIntervalMs ?? 1_000);

  const implementation: ProvisionerServiceServer = {
    registerExecutor: unaryHandler(logger, async (request) => {
      if (!request.executor) throw new InvalidArgumentError("executor is required");
      const isNew = await executors.register(request.executor);
      if (isNew) {
        logger.info("executor registered", {
          executorId: request.executor.executorId,
          address: request.executor.address,
        });
        await placement.publish();
        await provisioner.reconcile();
      }
      return { heartbeatIntervalMs: Math.floor(executors.ttlMs / 3), ttlMs: executors.ttlMs };
    }),
    heartbeat: unaryHandler(logger, async (request) => {
      const known = await executors.heartbeat(request.executorId, request.load, request.residentAdapterIds);
      if (known) {
        await placement.reconcileResidency(request.executorId, request.residentAdapterIds);
        const traffic = Object.entries(request.adapterRequests).filter(([, n]) => n > 0);
        if (traffic.length > 0) {
          const multi = redis.multi();
          for (const [id, n] of traffic) multi.hincrby(KEYS.traffic(id), "requests", n);
          await multi.exec();
        }
      }
      return { known, placementEpoch: await placement.epoch() };
    }),
    getPlacement: unaryHandler(logger, async (request) => {
      const snapshot = await provisioner.snapshot();
      const wanted = new Set(request.adapterIds);
      return {
        epoch: snapshot.epoch,
        adapters:
          request.adapterIds.length > 0 ? snapshot.changed.filter((a) => wanted.has(a.adapterId)) : snapshot.changed,
        executors: snapshot.executors,
      };
    }),
    watchPlacement: serverStreamHandler(logger, async (_request, call) => {
      let sending = false;
      let again = false;
      const send = async (): Promise<void> => {
        if (sending) {
          again = true;
          return;
        }
        sending = true;
        try {
          do {
            again = false;
            if (!call.writableEnded && !call.cancelled) call.write(await provisioner.snapshot());
          } while (again);
        } finally {
          sending = false;
        }
      };
      const watcher = (): void => void send().catch(() => undefined);
      watchers.add(watcher);
      await send();
      await new Promise<void>((resolve) => {
        call.on("cancelled", resolve);
        call.on("close", resolve);
      });
      watchers.delete(watcher);
    }),
    getLoadJob: unaryHandler(logger, async (request) => {
      const executorId = await redis.hget("lm:job-executors", request.jobId);
      const job = executorId ? await jobs.job(executorId, request.jobId) : undefined;
      if (!job || !executorId) throw new NotFoundError(`load job ${request.jobId} not found`);
      return jobStatus(job, executorId);
    }),
    registerAdapter: unaryHandler(logger, async (request) => {
      const { record, jobIds } = await provisioner.register(
        request.tenant,
        request.name,
        request.source?.source?.value ?? "",
      );
      return { adapter: await provisioner.describe(record), adapterId: record.id, loadJobIds: jobIds };
    }),
    listAdapters: unaryHandler(logger, async (request) => {
      const all = await adapters.list(request.tenant);
      const start = request.pageToken ? Number(request.pageToken) : 0;
      if (!Number.isInteger(start) || start < 0) throw new InvalidArgumentError("invalid page_token");
      const size = request.pageSize > 0 ? Math.min(request.pageSize, 1000) : 100;
      const page = all.slice(start, start + size);
      return {
        adapters: await Promise.all(page.map((r) => provisioner.describe(r))),
        nextPageToken: start + size < all.length ? String(start + size) : "",
      };
    }),
    getAdapter: unaryHandler(logger, async (request) =>
      provisioner.describe(await adapters.get(request.tenant, request.name)),
    ),
    deleteAdapter: unaryHandler(logger, async (request) => {
      await provisioner.remove(await adapters.get(request.tenant, request.name));
      return {};
    }),
    watchAdapterLoad: serverStreamHandler(logger, async (request, call) => {
      const record = await adapters.get(request.tenant, request.name);
      const seen = new Map<string, string>();
      const deadline = Date.now() + 10 * 60_000;
      while (!call.cancelled && Date.now() < deadline) {
        const statuses = await provisioner.jobStatuses(record.id);
        for (const s of statuses) {
          const key = JSON.stringify(s);
          if (seen.get(s.jobId) !== key) {
            seen.set(s.jobId, key);
            call.write(s);
          }
        }
        const ended = statuses.every(
          (s) => s.state === JobState.JOB_STATE_COMPLETED || s.state === JobState.JOB_STATE_FAILED,
        );
        if (ended) return;
        await new Promise((r) => setTimeout(r, 100));
      }
    }),
  };

  return {
    services: [{ name: SERVICE_NAMES.provisioner[0], definition: ProvisionerServiceService, implementation }],
    close: async () => {
      clearInterval(reconcileTimer);
      await jobs.close();
      subscriber.disconnect();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}

const STATE_OF_JOB: Record<string, JobState> = {
  waiting: JobState.JOB_STATE_WAITING,
  "waiting-children": JobState.JOB_STATE_WAITING,
  prioritized: JobState.JOB_STATE_WAITING,
  active: JobState.JOB_STATE_ACTIVE,
  delayed: JobState.JOB_STATE_DELAYED,
  completed: JobState.JOB_STATE_COMPLETED,
  failed: JobState.JOB_STATE_FAILED,
};

async function jobStatus(job: Job<AdapterJobData>, executorId: string): Promise<LoadJobStatus> {
  const state = await job.getState();
  const failed = state === "failed";
  return {
    jobId: job.id ?? "",
    kind: job.data.kind,
    adapterId: job.data.adapterId,
    executorId,
    state: STATE_OF_JOB[state] ?? JobState.JOB_STATE_UNSPECIFIED,
    progress: typeof job.progress === "number" ? job.progress : state === "completed" ? 1 : 0,
    attempts: job.attemptsMade,
    error: job.failedReason ?? "",
    // BullMQ marks unrecoverable failures by finishing before the attempt budget is spent.
    permanentFailure: failed && job.attemptsMade < (job.opts.attempts ?? 1),
  };
}

/** Live executors and the adapter bytes assigned to each, for one round of decisions. */
interface PlacementView {
  live: Awaited<ReturnType<ExecutorRegistry["live"]>>;
  assigned: Map<string, number>;
}

class Provisioner {
  constructor(
    private readonly redis: Redis,
    private readonly executors: ExecutorRegistry,
    private readonly adapters: AdapterRegistry,
    private readonly placement: PlacementStore,
    private readonly jobs: AdapterJobQueues,
    private readonly policy: PlacementPolicy,
    private readonly model: ModelConfig,
    private readonly logger: Logger,
  ) {}

  /** Validates the adapter against the base model, records it, and schedules its loads. */
  async register(tenant: string, name: string, dir: string): Promise<{ record: AdapterRecord; jobIds: string[] }> {
    if (!NAME_PATTERN.test(name))
      throw new InvalidArgumentError(
        `adapter name ${JSON.stringify(name)} must be 1-128 characters of [A-Za-z0-9_-], starting with a letter or digit`,
      );
    if (!NAME_PATTERN.test(tenant)) throw new InvalidArgumentError("invalid tenant");
    if (dir === "") throw new InvalidArgumentError("source.local_dir is required");
    if (!isAbsolute(dir))
      throw new InvalidArgumentError(`source.local_dir must be an absolute path, got ${JSON.stringify(dir)}`);
    if (!existsSync(dir))
      throw new InvalidArgumentError(`source.local_dir ${dir} does not exist on the provisioner's host`);
    // Throws AdapterError (INVALID_ARGUMENT) with the reason; nothing has been written yet.
    const adapter = loadAdapter(dir, this.model);
    const record: AdapterRecord = {
      id: internalAdapterId(tenant, name, adapter.contentHash),
      tenant,
      name,
      rank: adapter.rank,
      alpha: adapter.alpha,
      targetModules: adapter.targetModules,
      sizeBytes: adapter.sizeBytes,
      contentHash: adapter.contentHash,
      dir,
      createdUnixMs: Date.now(),
    };
    await this.adapters.create(record);
    this.logger.info("adapter registered", { tenant, name, id: record.id, rank: record.rank });
    await this.place(record);
    const jobIds = await this.existingJobIds(record.id);
    await this.placement.publish();
    return { record, jobIds };
  }

  async remove(record: AdapterRecord): Promise<void> {
    const targets = await this.placement.targets(record.id);
    const holders = await this.placement.holders(record.id);
    await this.adapters.remove(record);
    for (const executorId of new Set([...targets, ...holders])) {
      await this.enqueue({
        kind: "unload",
        adapterId: record.id,
        dir: record.dir,
        contentHash: record.contentHash,
        executorId,
        pin: false,
      });
    }
    await this.placement.publish();
    this.logger.info("adapter deleted", { id: record.id });
  }

  /** Re-runs the policy for every adapter (new executors get their adapters; dead ones drop out). */
  async reconcile(): Promise<void> {
    // One view of executors and their assigned bytes for the whole pass (kept current as this pass
    // assigns), instead of re-reading every adapter's targets for every adapter.
    const view = await this.placementView();
    for (const id of await this.adapters.allIds()) {
      const record = await this.adapters.byId(id);
      if (record) await this.place(record, view);
    }
  }

  private async placementView(): Promise<PlacementView> {
    const live = await this.executors.live((dead) => this.dropDead(dead));
    return { live, assigned: await this.assignedBytes(live.map((e) => e.info.executorId)) };
  }

  private async dropDead(ids: string[]): Promise<void> {
    for (const id of ids) {
      await this.placement.dropExecutor(id);
      this.logger.warn("executor expired; removed from placement", { executorId: id });
    }
  }

  /** Applies the policy with compare-and-set on the epoch; schedules loads for new targets. */
  private async place(record: AdapterRecord, given?: PlacementView): Promise<void> {
    let view = given;
    for (let attempt = 0; attempt < 16; attempt++) {
      const epoch = await this.placement.epoch();
      view ??= await this.placementView();
      const { live, assigned } = view;
      const current = await this.placement.targets(record.id);
      const wanted = this.policy.place(
        { id: record.id, rank: record.rank, sizeBytes: record.sizeBytes },
        live.map((e) => ({
          info: e.info,
          assignedBytes:
            (assigned.get(e.info.executorId) ?? 0) - (current.includes(e.info.executorId) ? record.sizeBytes : 0),
        })),
        current,
      );
      const add = wanted.filter((id) => !current.includes(id));
      const remove = current.filter((id) => !wanted.includes(id));
      if (add.length === 0 && remove.length === 0) return;
      if ((await this.placement.compareAndSetTargets(record.id, epoch, add, remove)) === undefined) {
        view = undefined; // lost a race: decide again on fresh state
        continue;
      }
      for (const id of add) assigned.set(id, (assigned.get(id) ?? 0) + record.sizeBytes);
      for (const id of remove) assigned.set(id, (assigned.get(id) ?? 0) - record.sizeBytes);
      for (const executorId of add) {
        await this.enqueue({
          kind: "load",
          adapterId: record.id,
          dir: record.dir,
          contentHash: record.contentHash,
          executorId,
          pin: false,
        });
      }
      return;
    }
    throw new InvalidArgumentError(`placement of ${record.id} kept conflicting; try again`);
  }

  private async enqueue(data: AdapterJobData): Promise<void> {
    const jobId = await this.jobs.add(data);
    await this.redis.hset("lm:job-executors", jobId, data.executorId);
    if (data.kind === "load") await this.redis.hset(KEYS.adapterJobs(data.adapterId), data.executorId, jobId);
  }

  private async existingJobIds(adapterId: string): Promise<string[]> {
    return Object.values(await this.redis.hgetall(KEYS.adapterJobs(adapterId))).sort();
  }

  private async assignedBytes(executorIds: string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>(executorIds.map((id) => [id, 0]));
    for (const id of await this.adapters.allIds()) {
      const record = await this.adapters.byId(id);
      if (!record) continue;
      for (const e of await this.placement.targets(id))
        if (out.has(e)) out.set(e, (out.get(e) as number) + record.sizeBytes);
    }
    return out;
  }

  async jobStatuses(adapterId: string): Promise<LoadJobStatus[]> {
    const entries = Object.entries(await this.redis.hgetall(KEYS.adapterJobs(adapterId)));
    const out: LoadJobStatus[] = [];
    for (const [executorId, jobId] of entries.sort()) {
      const job = await this.jobs.job(executorId, jobId);
      if (job) out.push(await jobStatus(job, executorId));
    }
    return out;
  }

  async describe(record: AdapterRecord): Promise<Adapter> {
    const holders = await this.placement.holders(record.id);
    let state = AdapterState.ADAPTER_STATE_REGISTERED;
    let error = "";
    if (holders.length > 0) state = AdapterState.ADAPTER_STATE_READY;
    else {
      const statuses = await this.jobStatuses(record.id);
      if (statuses.length > 0) {
        const failed = statuses.filter((s) => s.state === JobState.JOB_STATE_FAILED);
        if (failed.length === statuses.length) {
          state = AdapterState.ADAPTER_STATE_FAILED;
          error = failed[0]?.error ?? "";
        } else state = AdapterState.ADAPTER_STATE_LOADING;
      }
    }
    return {
      name: record.name,
      tenant: record.tenant,
      rank: record.rank,
      alpha: record.alpha,
      targetModules: record.targetModules,
      sizeBytes: record.sizeBytes,
      contentHash: record.contentHash,
      source: { source: { $case: "localDir", value: record.dir } },
      state,
      error,
      createdUnixMs: record.createdUnixMs,
      adapterId: record.id,
    };
  }

  async snapshot(): Promise<PlacementUpdate> {
    const live = await this.executors.live((dead) => this.dropDead(dead));
    const epoch = await this.placement.epoch();
    const changed: AdapterPlacement[] = [];
    for (const id of await this.adapters.allIds()) {
      const record = await this.adapters.byId(id);
      if (!record) continue;
      changed.push({
        adapterId: id,
        rank: record.rank,
        executorIds: await this.placement.holders(id),
        contentHash: record.contentHash,
      });
    }
    const executors: ExecutorInfo[] = live.map((e) => e.info);
    return { epoch, snapshot: true, changed, removedAdapterIds: [], executors };
  }
}
