/**
 * The provisioner: adapter registry per tenant, executor registry with heartbeat TTLs, placement
 * (resident sets reconciled from heartbeats, target sets chosen by a policy and turned into BullMQ
 * load/unload jobs), traffic statistics, and the placement watch stream.
 */
import { existsSync } from "node:fs";
import { isAbsolute } from "node:path";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from "@loramesh/errors";
import { serverStreamHandler, unaryHandler, type Logger, type ServiceInstance } from "@loramesh/core";
import { adapterContentHash, inspectAdapter, loadModelConfig, type ModelConfig } from "@loramesh/formats";
import {
  AdapterJobQueues,
  connectRedis,
  createRedis,
  internalAdapterId,
  NAME_PATTERN,
  type AdapterJobData,
} from "@loramesh/mesh";
import {
  CostModel,
  DEFAULT_CALIBRATION,
  planCapacity,
  policyByName,
  type PlacementPolicy,
  type Plan,
} from "@loramesh/policy";
import {
  AdapterState,
  ExecutorKind,
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
import { decidePlacement, type Move } from "./mesh-placement";
import { Migrations } from "./migrations";
import { PlacementStore, type TargetChange } from "./placement-store";
import { TrafficShares } from "./traffic";
import { KEYS } from "./redis-keys";
import { provisionerMetrics } from "./provisioner-metrics";

export interface ProvisionerOptions {
  redisUrl: string;
  heartbeatTtlMs: number;
  /** Base model directory: registration validates adapters against its config. */
  modelDir: string;
  logger: Logger;
  /** LoRA-server placement policy: random, round-robin, rank-aware, rank-aware+rebalancing. */
  policy?: string;
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
  const policy = policyByName(options.policy ?? "rank-aware+rebalancing");
  const recordJob = async (data: AdapterJobData, jobId: string): Promise<void> => {
    await redis.hset("lm:job-executors", jobId, data.executorId);
    if (data.kind === "load") await redis.hset(KEYS.adapterJobs(data.adapterId), data.executorId, jobId);
  };
  const migrations = new Migrations(options.redisUrl, placement, jobs, recordJob, options.drainMs ?? 3_000, logger);
  const provisioner = new Provisioner(
    redis,
    executors,
    adapters,
    placement,
    jobs,
    migrations,
    recordJob,
    policy,
    new TrafficShares(redis, options.trafficHalfLifeMs ?? 30_000),
    {
      rebalanceIntervalMs: options.rebalanceIntervalMs ?? 30_000,
      planCoverage: options.planCoverage ?? 0.95,
      planTpotMs: options.planTpotMs ?? 100,
    },
    model,
    logger,
  );
  provisionerMetrics(redis, executors, adapters, placement, () => provisioner.plan());
  logger.info("placement policy", { policy: policy.name });

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
    moveAdapter: unaryHandler(logger, async (request) => {
      const record = await adapters.get(request.tenant, request.name);
      const moveJobId = await provisioner.move(record, request.fromExecutorId, request.toExecutorId);
      return { moveJobId };
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
      let endedSince: number | undefined;
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
        // A finished load counts once the executor's heartbeat has reported the adapter resident,
        // so that READY follows the stream's end (bounded: a lost heartbeat does not hang it).
        const loaded = statuses.some((s) => s.state === JobState.JOB_STATE_COMPLETED);
        if (ended) {
          endedSince ??= Date.now();
          const resident = (await placement.holders(record.id)).length > 0;
          if (!loaded || resident || Date.now() - endedSince > options.heartbeatTtlMs) return;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }),
  };

  return {
    services: [{ name: SERVICE_NAMES.provisioner[0], definition: ProvisionerServiceService, implementation }],
    close: async () => {
      clearInterval(reconcileTimer);
      await migrations.close();
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

export interface ProvisionerTuning {
  rebalanceIntervalMs: number;
  planCoverage: number;
  planTpotMs: number;
}

/** Mean output tokens per request the planner assumes until workers report lengths. */
const PLAN_TOKENS_PER_REQUEST = 128;

class Provisioner {
  /** Reconcile passes of this process run one at a time (other provisioners are kept out by CAS). */
  private passes: Promise<void> = Promise.resolve();
  private lastRebalanceMs = Date.now();
  private shares = new Map<string, number>();
  private requestRate = 0;

  constructor(
    private readonly redis: Redis,
    private readonly executors: ExecutorRegistry,
    private readonly adapters: AdapterRegistry,
    private readonly placement: PlacementStore,
    private readonly jobs: AdapterJobQueues,
    private readonly migrations: Migrations,
    private readonly recordJob: (data: AdapterJobData, jobId: string) => Promise<void>,
    private readonly policy: PlacementPolicy,
    private readonly traffic: TrafficShares,
    private readonly tuning: ProvisionerTuning,
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
    // Throws AdapterError (INVALID_ARGUMENT) with the reason; nothing has been written yet. Headers
    // only: the weights are read and converted by the executors that load the adapter.
    const inspected = inspectAdapter(dir, this.model);
    const adapter = { ...inspected, contentHash: await adapterContentHash(inspected) };
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
    await this.reconcile();
    const jobIds = await this.existingJobIds(record.id);
    await this.placement.publish();
    return { record, jobIds };
  }

  async remove(record: AdapterRecord): Promise<void> {
    const targets = await this.placement.targets(record.id);
    const holders = await this.placement.holders(record.id);
    await this.adapters.remove(record);
    const sequence = await this.placement.epoch();
    for (const executorId of new Set([...targets, ...holders])) {
      await this.enqueue(
        {
          kind: "unload",
          adapterId: record.id,
          dir: record.dir,
          contentHash: record.contentHash,
          executorId,
          pin: false,
        },
        sequence,
      );
    }
    await this.placement.publish();
    this.logger.info("adapter deleted", { id: record.id });
  }

  /** Re-decides placement for every adapter (one pass at a time in this process). */
  reconcile(): Promise<void> {
    const pass = this.passes.then(() => this.reconcilePass());
    this.passes = pass.catch(() => undefined);
    return pass;
  }

  /**
   * Starts a move of the adapter from one executor to another (operators; the rebalancer makes
   * the same moves). Returns the id of the move's switch job.
   */
  async move(record: AdapterRecord, from: string, to: string): Promise<string> {
    if (from === "" || to === "" || from === to)
      throw new InvalidArgumentError("from_executor_id and to_executor_id must name two different executors");
    for (let attempt = 0; attempt < 16; attempt++) {
      const epoch = await this.placement.epoch();
      if ((await this.placement.moving()).has(record.id))
        throw new FailedPreconditionError(`adapter ${record.name} is already being moved`);
      const live = await this.executors.live((dead) => this.dropDead(dead));
      const target = live.find((e) => e.info.executorId === to)?.info;
      if (!target) throw new NotFoundError(`executor ${to} is not live`);
      const targets = await this.placement.targets(record.id);
      if (!targets.includes(from)) throw new FailedPreconditionError(`adapter ${record.name} is not placed on ${from}`);
      if (targets.includes(to)) throw new FailedPreconditionError(`adapter ${record.name} is already placed on ${to}`);
      if (target.maxRank > 0 && record.rank > target.maxRank)
        throw new FailedPreconditionError(`rank ${record.rank} is above ${to}'s limit of ${target.maxRank}`);
      const used = (await this.assignedBytes([to])).get(to) ?? 0;
      if (target.adapterCapacityBytes > 0 && used + record.sizeBytes > target.adapterCapacityBytes)
        throw new FailedPreconditionError(`${to} has no room for ${record.sizeBytes} more adapter bytes`);
      const sequence = await this.placement.compareAndSetTargets(epoch, [
        { adapterId: record.id, add: [to], remove: [], startsMove: true },
      ]);
      if (sequence === undefined) continue; // lost a race: check again on fresh state
      return this.migrations.start({ adapterId: record.id, from, to }, record, sequence);
    }
    throw new FailedPreconditionError(`placement of ${record.name} kept changing; try again`);
  }

  /** The planner's recommendation from live traffic, adapter sizes and LoRA-server budgets. */
  async plan(): Promise<Plan | undefined> {
    const live = await this.executors.live();
    const capacities = live
      .filter((e) => e.info.kind === ExecutorKind.EXECUTOR_KIND_LORA_SERVER && e.info.adapterCapacityBytes > 0)
      .map((e) => e.info.adapterCapacityBytes);
    const records = await this.records();
    if (records.length === 0 || capacities.length === 0) return undefined;
    const known = [...this.shares.values()].some((s) => s > 0);
    return planCapacity(
      {
        adapters: records.map((r) => ({
          id: r.id,
          rank: r.rank,
          sizeBytes: r.sizeBytes,
          share: known ? (this.shares.get(r.id) ?? 0) : 1 / records.length,
        })),
        serverCapacityBytes: Math.min(...capacities),
        coverage: this.tuning.planCoverage,
        requestRate: this.requestRate,
        decodeTokensPerRequest: PLAN_TOKENS_PER_REQUEST,
        tpotMs: this.tuning.planTpotMs,
      },
      new CostModel(DEFAULT_CALIBRATION),
    );
  }

  private async records(): Promise<AdapterRecord[]> {
    const out: AdapterRecord[] = [];
    for (const id of await this.adapters.allIds()) {
      const record = await this.adapters.byId(id);
      if (record) out.push(record);
    }
    return out;
  }

  private async reconcilePass(): Promise<void> {
    const ids = await this.adapters.allIds();
    this.shares = await this.traffic.read(ids);
    this.requestRate = this.traffic.requestsPerSecond;
    const rebalance =
      this.policy.name === "rank-aware+rebalancing" &&
      Date.now() - this.lastRebalanceMs >= this.tuning.rebalanceIntervalMs;
    for (let attempt = 0; attempt < 16; attempt++) {
      const epoch = await this.placement.epoch();
      const live = await this.executors.live((dead) => this.dropDead(dead));
      const liveIds = new Set(live.map((e) => e.info.executorId));
      const records = await this.records();
      const targets = new Map<string, string[]>();
      for (const r of records) targets.set(r.id, await this.placement.targets(r.id));
      const decision = decidePlacement(
        {
          adapters: records.map((r) => ({
            id: r.id,
            rank: r.rank,
            sizeBytes: r.sizeBytes,
            share: this.shares.get(r.id) ?? 0,
          })),
          executors: live.map((e) => e.info),
          targets,
          moving: await this.placement.moving(),
        },
        this.policy,
        { rebalance },
      );
      const moved = new Set(decision.moves.map((m) => `${m.adapterId} ${m.to}`));
      const changes: TargetChange[] = [];
      for (const r of records) {
        const current = targets.get(r.id) ?? [];
        const wanted = decision.targets.get(r.id) ?? [];
        const add = wanted.filter((id) => !current.includes(id));
        const remove = current.filter((id) => !wanted.includes(id));
        const startsMove = decision.moves.some((m) => m.adapterId === r.id);
        if (add.length > 0 || remove.length > 0 || startsMove)
          changes.push({ adapterId: r.id, add, remove, startsMove });
      }
      if (changes.length === 0) {
        if (rebalance) this.lastRebalanceMs = Date.now();
        return;
      }
      const sequence = await this.placement.compareAndSetTargets(epoch, changes);
      if (sequence === undefined) continue; // another provisioner (or a heartbeat) changed placement
      if (rebalance) this.lastRebalanceMs = Date.now();
      const byId = new Map(records.map((r) => [r.id, r]));
      for (const c of changes) {
        const record = byId.get(c.adapterId) as AdapterRecord;
        const job = { adapterId: record.id, dir: record.dir, contentHash: record.contentHash, pin: false };
        for (const executorId of c.add)
          if (!moved.has(`${record.id} ${executorId}`))
            await this.enqueue({ ...job, kind: "load", executorId }, sequence);
        for (const executorId of c.remove)
          if (liveIds.has(executorId)) await this.enqueue({ ...job, kind: "unload", executorId }, sequence);
      }
      for (const m of decision.moves) await this.migrations.start(m, byId.get(m.adapterId) as AdapterRecord, sequence);
      if (decision.moves.length > 0)
        this.logger.info("rebalancing", {
          moves: decision.moves.map((m: Move) => `${m.adapterId}: ${m.from} → ${m.to}`),
        });
      return;
    }
    throw new FailedPreconditionError("placement kept changing during reconcile; will retry");
  }

  private async dropDead(ids: string[]): Promise<void> {
    for (const id of ids) {
      await this.placement.dropExecutor(id);
      this.logger.warn("executor expired; removed from placement", { executorId: id });
    }
  }

  private async enqueue(data: AdapterJobData, sequence: number): Promise<void> {
    await this.recordJob(data, await this.jobs.add(data, { sequence }));
  }

  private async existingJobIds(adapterId: string): Promise<string[]> {
    return Object.values(await this.redis.hgetall(KEYS.adapterJobs(adapterId))).sort();
  }

  private async assignedBytes(executorIds: string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>(executorIds.map((id) => [id, 0]));
    for (const record of await this.records()) {
      for (const e of await this.placement.targets(record.id))
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
      // Executors being drained after a move still hold the adapter but get no new work.
      const holders = await this.placement.holders(id);
      const draining = new Set(await this.placement.draining(id));
      const routable = holders.filter((h) => !draining.has(h));
      changed.push({
        adapterId: id,
        rank: record.rank,
        executorIds: routable.length > 0 ? routable : holders,
        contentHash: record.contentHash,
      });
    }
    const executors: ExecutorInfo[] = live.map((e) => e.info);
    return { epoch, snapshot: true, changed, removedAdapterIds: [], executors };
  }
}
