/**
 * The provisioner's domain: the adapter registry per tenant, executors with heartbeat TTLs,
 * placement (resident sets reconciled from heartbeats, target sets chosen by a policy and turned
 * into BullMQ load/unload jobs), moves, traffic statistics and the capacity plan. It takes and
 * returns plain data; the gRPC handlers map it to and from protobuf.
 */
import type { Logger } from "@loramesh/core";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from "@loramesh/errors";
import {
  adapterContentHash,
  checkAdapterWeights,
  inspectAdapter,
  resolveAdapterDir,
  type AdapterLimits,
  type ModelConfig,
} from "@loramesh/formats";
import {
  internalAdapterId,
  NAME_PATTERN,
  REDIS_KEYS,
  type AdapterJobData,
  type AdapterJobQueues,
  type PeerRef,
} from "@loramesh/mesh";
import { CostModel, DEFAULT_CALIBRATION, planCapacity, type PlacementPolicy, type Plan } from "@loramesh/policy";
import { ExecutorKind, type ExecutorInfo, type ExecutorLoad } from "@loramesh/proto";
import type { Redis } from "ioredis";
import type { AdapterRecord, AdapterRegistry } from "./adapter-registry";
import type { RemoteAdapters } from "./remote-adapters";
import type { ExecutorRegistry } from "./executor-registry";
import { jobViews, jobView, type JobView } from "./job-view";
import { decidePlacement, leastUsedFitting, policyExecutor, Room, type Move } from "./mesh-placement";
import type { Migrations } from "./migrations";
import type { PlacementStore, TargetChange } from "./placement-store";
import { requestCounts, type TrafficShares } from "./traffic";

export interface ProvisionerTuning {
  rebalanceIntervalMs: number;
  planCoverage: number;
  planTpotMs: number;
}

export interface ProvisionerDeps {
  redis: Redis;
  executors: ExecutorRegistry;
  adapters: AdapterRegistry;
  placement: PlacementStore;
  jobs: AdapterJobQueues;
  migrations: Migrations;
  /** Remembers a scheduled job (job → executor, and an adapter's load job per executor). */
  recordJob: (data: AdapterJobData, jobId: string) => Promise<void>;
  policy: PlacementPolicy;
  traffic: TrafficShares;
  tuning: ProvisionerTuning;
  model: ModelConfig;
  /** Where adapters may come from and how large they may be. */
  sources?: { roots: string[]; limits: Partial<AdapterLimits> };
  /** Fetches and validates adapters registered from hf://, s3:// and http(s):// sources. */
  remote: RemoteAdapters;
  logger: Logger;
}

/** Where a registration's files come from: a local directory or a remote source URI. */
export type RegistrationSource = { localDir: string } | { uri: string };

export type AdapterPhase = "registered" | "loading" | "ready" | "failed";

export interface AdapterView {
  record: AdapterRecord;
  phase: AdapterPhase;
  /** Why it failed (phase "failed"). */
  error: string;
}

export interface PlacementView {
  epoch: number;
  adapters: Array<{ adapterId: string; rank: number; executorIds: string[]; contentHash: string }>;
  executors: ExecutorInfo[];
}

export interface PlanInput {
  adapters: Array<{ id: string; rank: number; sizeBytes: number; requests: number; share: number }>;
  requestRate: number;
}

export interface AdapterPage {
  adapters: AdapterView[];
  nextPageToken: string;
}

/** Mean output tokens per request the planner assumes until workers report lengths. */
const PLAN_TOKENS_PER_REQUEST = 128;

export class Provisioner {
  /** Reconcile passes of this process run one at a time (other provisioners are kept out by CAS). */
  private passes: Promise<void> = Promise.resolve();
  private lastRebalanceMs = Date.now();
  private shares = new Map<string, number>();
  private requestRate = 0;

  constructor(private readonly deps: ProvisionerDeps) {}

  get heartbeatIntervalMs(): number {
    return Math.floor(this.deps.executors.ttlMs / 3);
  }

  get ttlMs(): number {
    return this.deps.executors.ttlMs;
  }

  /**
   * Records or refreshes an executor; a new one changes placement at once. A registration comes
   * from a process that has just started (or was told it is unknown), so it holds nothing it has
   * not yet reported: it leaves every adapter's targets, and reconcile schedules its loads again
   * (one it does hold answers the load at once). Whether its old registration still lived does not
   * matter: a process restarted after its key expired but before a sweep noticed re-registers as
   * "new" while the targets still name it, and without this it would never be given them again.
   */
  async registerExecutor(info: ExecutorInfo): Promise<void> {
    const isNew = await this.deps.executors.register(info);
    const forgotten = await this.forgetTargetsOf(info.executorId);
    if (isNew) this.deps.logger.info("executor registered", { executorId: info.executorId, address: info.address });
    if (forgotten > 0)
      this.deps.logger.info("executor registered again; its adapters are placed again", {
        executorId: info.executorId,
        adapters: forgotten,
        registrationLived: !isNew,
      });
    if (!isNew && forgotten === 0) return;
    await this.deps.placement.publish();
    await this.reconcile();
  }

  /** Removes an executor from every adapter's targets (under the placement epoch); how many. */
  private async forgetTargetsOf(executorId: string): Promise<number> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const epoch = await this.deps.placement.epoch();
      const records = await this.deps.adapters.all();
      const targets = await this.deps.placement.targetsOf(records.map((r) => r.id));
      const changes = [...targets]
        .filter(([, ids]) => ids.includes(executorId))
        .map(([adapterId]) => ({ adapterId, add: [], remove: [executorId] }));
      if (changes.length === 0) return 0;
      if ((await this.deps.placement.compareAndSetTargets(epoch, changes)) !== undefined) return changes.length;
    }
    throw new FailedPreconditionError(`placement kept changing while ${executorId} re-registered; it retries`);
  }

  /** Refreshes an executor, reconciles its residency and adds its traffic. False when unknown. */
  async heartbeat(
    executorId: string,
    load: ExecutorLoad | undefined,
    resident: string[],
    requests: Record<string, number>,
  ): Promise<{ known: boolean; epoch: number }> {
    const known = await this.deps.executors.heartbeat(executorId, load, resident);
    if (known) {
      await this.deps.placement.reconcileResidency(executorId, resident);
      const traffic = Object.entries(requests).filter(([, n]) => n > 0);
      if (traffic.length > 0) {
        const multi = this.deps.redis.multi();
        for (const [id, n] of traffic) multi.hincrby(REDIS_KEYS.traffic(id), "requests", n);
        await multi.exec();
      }
    }
    return { known, epoch: await this.deps.placement.epoch() };
  }

  /** Validates the adapter against the base model, records it, and schedules its loads. */
  async register(
    tenant: string,
    name: string,
    source: RegistrationSource,
  ): Promise<{ view: AdapterView; jobIds: string[] }> {
    const { adapter, dir, uri, discard } = await this.inspectSource(tenant, name, source);
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
      ...(uri !== undefined ? { source: uri } : {}),
      createdUnixMs: Date.now(),
    };
    try {
      await this.deps.adapters.create(record);
    } catch (err) {
      discard(); // nothing half-registered: a refused name leaves no fetched files behind either
      throw err;
    }
    this.deps.logger.info("adapter registered", { tenant, name, id: record.id, rank: record.rank });
    await this.reconcile();
    const jobIds = Object.values(await this.deps.redis.hgetall(REDIS_KEYS.adapterJobs(record.id))).sort();
    await this.deps.placement.publish();
    return { view: await this.describe(record), jobIds };
  }

  /**
   * Validates a registration's adapter (headers only: the weights are read and converted by the
   * executors that load it). A remote source is fetched into the host's adapter cache first.
   * Throws AdapterError (INVALID_ARGUMENT) with the reason; nothing has been written yet.
   */
  private async inspectSource(
    tenant: string,
    name: string,
    source: RegistrationSource,
  ): Promise<{
    adapter: ReturnType<typeof inspectAdapter> & { contentHash: string };
    dir: string;
    uri?: string;
    discard: () => void;
  }> {
    if ("uri" in source) {
      validateNames(tenant, name);
      const fetched = await this.deps.remote.fetch(source.uri);
      try {
        await this.checkWeights(fetched.adapter);
      } catch (err) {
        fetched.discard();
        throw err;
      }
      return { ...fetched, uri: source.uri };
    }
    validateSource(tenant, name, source.localDir);
    const sources = this.deps.sources ?? { roots: [], limits: {} };
    // Each step throws AdapterError (INVALID_ARGUMENT) with the reason; nothing is written before
    // all of them passed: the directory (inside the roots, symlinks resolved), the files, the
    // config and headers against the model, then every weight's value.
    const dir = resolveAdapterDir(source.localDir, sources.roots);
    const inspected = inspectAdapter(dir, this.deps.model, sources.limits);
    await this.checkWeights(inspected);
    return {
      adapter: { ...inspected, contentHash: await adapterContentHash(inspected) },
      dir,
      discard: () => undefined,
    };
  }

  /** Every weight finite and within the documented bound (AdapterError naming the tensor). */
  private async checkWeights(inspected: ReturnType<typeof inspectAdapter>): Promise<void> {
    await checkAdapterWeights(
      inspected.weightsPath,
      inspected.modules.flatMap((m) => [m.keyA, m.keyB]),
      this.deps.sources?.limits.maxAbsWeight,
    );
  }

  async get(tenant: string, name: string): Promise<AdapterView> {
    return this.describe(await this.deps.adapters.get(tenant, name));
  }

  /** The tenant's adapters by name, a page at a time (the token is an offset). */
  async list(tenant: string, pageToken: string, pageSize: number): Promise<AdapterPage> {
    const all = await this.deps.adapters.list(tenant);
    const start = pageToken ? Number(pageToken) : 0;
    if (!Number.isInteger(start) || start < 0) throw new InvalidArgumentError("invalid page_token");
    const size = pageSize > 0 ? Math.min(pageSize, 1000) : 100;
    const page = all.slice(start, start + size);
    return {
      adapters: await Promise.all(page.map((r) => this.describe(r))),
      nextPageToken: start + size < all.length ? String(start + size) : "",
    };
  }

  /** Removes the adapter's record and schedules its unload everywhere it was placed. */
  async remove(tenant: string, name: string): Promise<void> {
    const record = await this.deps.adapters.get(tenant, name);
    const targets = await this.deps.placement.targets(record.id);
    const holders = await this.deps.placement.holders(record.id);
    await this.deps.adapters.remove(record);
    const sequence = await this.deps.placement.epoch();
    const job = { kind: "unload", adapterId: record.id, dir: record.dir, contentHash: record.contentHash } as const;
    for (const executorId of new Set([...targets, ...holders]))
      await this.enqueue({ ...job, executorId, pin: false }, sequence);
    await this.deps.placement.publish();
    this.deps.logger.info("adapter deleted", { id: record.id });
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
  async move(tenant: string, name: string, from: string, to: string): Promise<string> {
    const record = await this.deps.adapters.get(tenant, name);
    if (from === "" || to === "" || from === to)
      throw new InvalidArgumentError("from_executor_id and to_executor_id must name two different executors");
    for (let attempt = 0; attempt < 16; attempt++) {
      const epoch = await this.deps.placement.epoch();
      await this.checkMove(record, from, to);
      const sequence = await this.deps.placement.compareAndSetTargets(epoch, [
        { adapterId: record.id, add: [to], remove: [], startsMove: true },
      ]);
      if (sequence === undefined) continue; // lost a race: check again on fresh state
      return this.deps.migrations.start(
        { adapterId: record.id, from, to },
        record,
        sequence,
        await this.peersOf(record),
      );
    }
    throw new FailedPreconditionError(`placement of ${record.name} kept changing; try again`);
  }

  /** The statistics capacity planning starts from: adapters, their sizes and traffic. */
  async planInput(): Promise<PlanInput> {
    const records = await this.deps.adapters.all();
    const counts = await requestCounts(
      this.deps.redis,
      records.map((r) => r.id),
    );
    return {
      adapters: records.map((r, i) => ({
        id: r.id,
        rank: r.rank,
        sizeBytes: r.sizeBytes,
        requests: counts[i] as number,
        share: this.shares.get(r.id) ?? 0,
      })),
      requestRate: this.requestRate,
    };
  }

  /** The planner's recommendation from live traffic, adapter sizes and LoRA-server budgets. */
  async plan(): Promise<Plan | undefined> {
    const live = await this.deps.executors.live();
    const capacities = live
      .filter((e) => e.info.kind === ExecutorKind.EXECUTOR_KIND_LORA_SERVER && e.info.adapterCapacityBytes > 0)
      .map((e) => e.info.adapterCapacityBytes);
    const records = await this.deps.adapters.all();
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
        coverage: this.deps.tuning.planCoverage,
        requestRate: this.requestRate,
        decodeTokensPerRequest: PLAN_TOKENS_PER_REQUEST,
        tpotMs: this.deps.tuning.planTpotMs,
      },
      new CostModel(DEFAULT_CALIBRATION),
    );
  }

  /** One adapter job by id, on whichever executor's queue it is. */
  async loadJob(jobId: string): Promise<JobView> {
    const executorId = await this.deps.redis.hget(REDIS_KEYS.jobExecutors, jobId);
    const job = executorId ? await this.deps.jobs.job(executorId, jobId) : undefined;
    if (!job || !executorId) throw new NotFoundError(`load job ${jobId} not found`);
    return jobView(job, executorId);
  }

  /** The adapter's load jobs, one per executor. */
  async jobStatuses(adapterId: string): Promise<JobView[]> {
    return jobViews(this.deps.jobs, await this.deps.redis.hgetall(REDIS_KEYS.adapterJobs(adapterId)));
  }

  async describe(record: AdapterRecord): Promise<AdapterView> {
    if ((await this.deps.placement.holders(record.id)).length > 0) return { record, phase: "ready", error: "" };
    const statuses = await this.jobStatuses(record.id);
    if (statuses.length === 0) return { record, phase: "registered", error: "" };
    const failed = statuses.filter((s) => s.phase === "failed");
    if (failed.length === statuses.length) return { record, phase: "failed", error: failed[0]?.error ?? "" };
    return { record, phase: "loading", error: "" };
  }

  /** Live executors and, per adapter, the executors new work should go to. */
  async snapshot(): Promise<PlacementView> {
    const live = await this.deps.executors.live((dead) => this.dropDead(dead));
    const epoch = await this.deps.placement.epoch();
    const records = await this.deps.adapters.all();
    const residency = await this.deps.placement.residencyOf(records.map((r) => r.id));
    const adapters = records.map((record) => {
      const { holders, draining } = residency.get(record.id) ?? { holders: [], draining: [] };
      // Executors being drained after a move still hold the adapter but get no new work.
      const routable = holders.filter((h) => !draining.includes(h));
      return {
        adapterId: record.id,
        rank: record.rank,
        executorIds: routable.length > 0 ? routable : holders,
        contentHash: record.contentHash,
      };
    });
    return { epoch, adapters, executors: live.map((e) => e.info) };
  }

  /** Whether the adapter is resident anywhere (a finished load counts once a heartbeat says so). */
  async resident(adapterId: string): Promise<boolean> {
    return (await this.deps.placement.holders(adapterId)).length > 0;
  }

  private async checkMove(record: AdapterRecord, from: string, to: string): Promise<void> {
    if ((await this.deps.placement.moving()).has(record.id))
      throw new FailedPreconditionError(`adapter ${record.name} is already being moved`);
    const live = await this.deps.executors.live((dead) => this.dropDead(dead));
    const target = live.find((e) => e.info.executorId === to)?.info;
    if (!target) throw new NotFoundError(`executor ${to} is not live`);
    const targets = await this.deps.placement.targets(record.id);
    if (!targets.includes(from)) throw new FailedPreconditionError(`adapter ${record.name} is not placed on ${from}`);
    if (targets.includes(to)) throw new FailedPreconditionError(`adapter ${record.name} is already placed on ${to}`);
    if (target.maxRank > 0 && record.rank > target.maxRank)
      throw new FailedPreconditionError(`rank ${record.rank} is above ${to}'s limit of ${target.maxRank}`);
    const used = await this.assignedBytes(to);
    if (target.adapterCapacityBytes > 0 && used + record.sizeBytes > target.adapterCapacityBytes)
      throw new FailedPreconditionError(`${to} has no room for ${record.sizeBytes} more adapter bytes`);
  }

  private async reconcilePass(): Promise<void> {
    this.shares = await this.deps.traffic.read(await this.deps.adapters.allIds());
    this.requestRate = this.deps.traffic.requestsPerSecond;
    const rebalance =
      this.deps.policy.name === "rank-aware+rebalancing" &&
      Date.now() - this.lastRebalanceMs >= this.deps.tuning.rebalanceIntervalMs;
    for (let attempt = 0; attempt < 16; attempt++) {
      const epoch = await this.deps.placement.epoch();
      const live = await this.deps.executors.live((dead) => this.dropDead(dead));
      const records = await this.deps.adapters.all();
      const targets = await this.deps.placement.targetsOf(records.map((r) => r.id));
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
          moving: await this.deps.placement.moving(),
        },
        this.deps.policy,
        { rebalance },
      );
      const changes = targetChanges(records, targets, decision.targets, decision.moves);
      if (changes.length > 0) {
        const sequence = await this.deps.placement.compareAndSetTargets(epoch, changes);
        if (sequence === undefined) continue; // another provisioner (or a heartbeat) changed placement
        const liveIds = new Set(live.map((e) => e.info.executorId));
        await this.apply(changes, decision.moves, new Map(records.map((r) => [r.id, r])), liveIds, sequence);
      }
      if (rebalance) {
        this.lastRebalanceMs = Date.now();
        // A rebalance that moves nothing writes nothing (no epoch, no publish): say so, for tests and
        // for whoever suspects it of a stall (m15v: the hybrid case's ~30 s stall was the worker's GC).
        if (changes.length === 0) this.deps.logger.debug("rebalance: nothing to move", { epoch });
      }
      return;
    }
    throw new FailedPreconditionError("placement kept changing during reconcile; will retry");
  }

  /** Schedules the jobs of a decision that won its compare-and-set at `sequence`. */
  private async apply(
    changes: TargetChange[],
    moves: Move[],
    byId: Map<string, AdapterRecord>,
    liveIds: Set<string>,
    sequence: number,
  ): Promise<void> {
    const moved = new Set(moves.map((m) => `${m.adapterId} ${m.to}`));
    for (const c of changes) {
      const record = byId.get(c.adapterId) as AdapterRecord;
      const job = { ...jobSource(record), pin: false };
      const peers = c.add.length > 0 ? await this.peersOf(record) : [];
      for (const executorId of c.add)
        if (!moved.has(`${record.id} ${executorId}`))
          await this.enqueue({ ...job, kind: "load", executorId, peers }, sequence);
      for (const executorId of c.remove)
        if (liveIds.has(executorId)) await this.enqueue({ ...job, kind: "unload", executorId }, sequence);
    }
    for (const m of moves)
      await this.deps.migrations.start(
        m,
        byId.get(m.adapterId) as AdapterRecord,
        sequence,
        await this.peersOf(byId.get(m.adapterId) as AdapterRecord),
      );
    if (moves.length > 0)
      this.deps.logger.info("rebalancing", { moves: moves.map((m) => `${m.adapterId}: ${m.from} → ${m.to}`) });
  }

  /**
   * A router admitted a request for an adapter no executor holds: start its loads now on its
   * targets (placing it first when it has none) instead of when a worker asks. Loads already
   * waiting or running are left alone. Returns the jobs it started.
   */
  async prefetch(adapterId: string): Promise<string[]> {
    const record = await this.deps.adapters.byId(adapterId);
    if (!record) throw new NotFoundError(`adapter ${adapterId} not found`);
    if ((await this.deps.placement.holders(adapterId)).length > 0) return [];
    let targets = await this.deps.placement.targets(adapterId);
    if (targets.length === 0) {
      await this.reconcile();
      targets = await this.deps.placement.targets(adapterId);
    }
    const running = new Set(
      (await this.jobStatuses(adapterId))
        .filter((j) => j.phase === "waiting" || j.phase === "active" || j.phase === "delayed")
        .map((j) => j.executorId),
    );
    const sequence = await this.deps.placement.epoch();
    const peers = await this.peersOf(record);
    const started: string[] = [];
    for (const executorId of targets.filter((t) => !running.has(t))) {
      const data: AdapterJobData = {
        ...jobSource(record),
        kind: "load",
        executorId,
        pin: false,
        peers,
        reason: "prefetch",
      };
      const jobId = await this.deps.jobs.add(data, { sequence, tag: "prefetch" });
      await this.deps.recordJob(data, jobId);
      started.push(jobId);
    }
    if (started.length > 0) this.deps.logger.info("prefetching a cold adapter", { adapterId, jobs: started });
    return started;
  }

  /**
   * A worker cannot reach `executorId` (a partition, not a death: the server may still heartbeat,
   * so expiry never re-places its adapters). Each listed adapter whose only live LoRA-server target
   * is that server gets one more target on the least-assigned other live LoRA server with room; the
   * server itself stays placed (other workers may reach it). Returns the load jobs started.
   */
  async replicateAway(reporterId: string, executorId: string, adapterIds: readonly string[]): Promise<string[]> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const epoch = await this.deps.placement.epoch();
      const servers = (await this.deps.executors.live())
        .map((e) => e.info)
        .filter((e) => e.kind === ExecutorKind.EXECUTOR_KIND_LORA_SERVER);
      const others = servers.filter((e) => e.executorId !== executorId).map(policyExecutor);
      const all = await this.deps.adapters.all();
      const targets = await this.deps.placement.targetsOf(all.map((r) => r.id));
      const room = new Room(new Map(others.map((e) => [e.id, e])));
      for (const r of all) for (const id of targets.get(r.id) ?? []) room.take(id, r);
      const wanted = new Set(adapterIds);
      const records = all.filter((r) => wanted.has(r.id));
      const changes: TargetChange[] = [];
      for (const record of records) {
        const current = targets.get(record.id) ?? [];
        if (others.some((e) => current.includes(e.id))) continue; // another reachable holder exists
        const to = leastUsedFitting(record, room, others);
        if (to === undefined) continue;
        room.take(to, record);
        changes.push({ adapterId: record.id, add: [to], remove: [] });
      }
      if (changes.length === 0) return [];
      const sequence = await this.deps.placement.compareAndSetTargets(epoch, changes);
      if (sequence === undefined) continue; // placement changed meanwhile: decide again
      this.deps.logger.warn("a worker cannot reach a LoRA server; its adapters get a replica elsewhere", {
        reporter: reporterId,
        unreachable: executorId,
        replicas: changes.map((c) => `${c.adapterId} → ${c.add.join(",")}`),
      });
      const started: string[] = [];
      const byId = new Map(records.map((r) => [r.id, r]));
      for (const c of changes) {
        const record = byId.get(c.adapterId) as AdapterRecord;
        const data: AdapterJobData = {
          ...jobSource(record),
          kind: "load",
          executorId: c.add[0] as string,
          pin: false,
          peers: await this.peersOf(record),
          reason: "unreachable",
        };
        const jobId = await this.deps.jobs.add(data, { sequence });
        await this.deps.recordJob(data, jobId);
        started.push(jobId);
      }
      return started;
    }
    throw new FailedPreconditionError(`placement kept changing while replicating away from ${executorId}; retry`);
  }

  /**
   * Executors holding a remote-source adapter's version now, with their addresses: a new load
   * fetches from them before the source. The version is the content hash, so a holder of the same
   * bytes registered under another name (or tenant) counts; the registrant fetched those bytes from
   * its own source, and a peer hands out only bytes of the hash asked for. Local directories are read
   * in place, so they have none.
   */
  private async peersOf(record: AdapterRecord): Promise<PeerRef[]> {
    if (!record.source) return [];
    const sameVersion = (await this.deps.adapters.all()).filter(
      (r) => r.id === record.id || (r.source && r.contentHash === record.contentHash),
    );
    const held = await Promise.all(sameVersion.map((r) => this.deps.placement.holders(r.id)));
    // The adapter's own holders first: they have it in memory as well as on disk.
    const holders = new Set([...(await this.deps.placement.holders(record.id)), ...held.flat()]);
    if (holders.size === 0) return [];
    const address = new Map((await this.deps.executors.live()).map((e) => [e.info.executorId, e.info.address]));
    return [...holders]
      .map((executorId) => ({ executorId, address: address.get(executorId) ?? "" }))
      .filter((p) => p.address !== "");
  }

  private async dropDead(ids: string[]): Promise<void> {
    for (const id of ids) {
      await this.deps.placement.dropExecutor(id);
      this.deps.logger.warn("executor expired; removed from placement", { executorId: id });
    }
  }

  private async enqueue(data: AdapterJobData, sequence: number): Promise<void> {
    await this.deps.recordJob(data, await this.deps.jobs.add(data, { sequence }));
  }

  /** Adapter bytes the policy has assigned to one executor. */
  private async assignedBytes(executorId: string): Promise<number> {
    const records = await this.deps.adapters.all();
    const targets = await this.deps.placement.targetsOf(records.map((r) => r.id));
    return records.reduce((sum, r) => sum + ((targets.get(r.id) ?? []).includes(executorId) ? r.sizeBytes : 0), 0);
  }
}

/** The target-set changes that take placement from `current` to `wanted`. */
function targetChanges(
  records: readonly AdapterRecord[],
  current: Map<string, string[]>,
  wanted: Map<string, string[]>,
  moves: readonly Move[],
): TargetChange[] {
  const changes: TargetChange[] = [];
  for (const r of records) {
    const now = current.get(r.id) ?? [];
    const next = wanted.get(r.id) ?? [];
    const add = next.filter((id) => !now.includes(id));
    const remove = now.filter((id) => !next.includes(id));
    const startsMove = moves.some((m) => m.adapterId === r.id);
    if (add.length > 0 || remove.length > 0 || startsMove) changes.push({ adapterId: r.id, add, remove, startsMove });
  }
  return changes;
}

/** The fields of a job that say where the adapter's files are. */
export function jobSource(record: AdapterRecord): Pick<AdapterJobData, "adapterId" | "dir" | "contentHash" | "source"> {
  return {
    adapterId: record.id,
    dir: record.dir,
    contentHash: record.contentHash,
    ...(record.source ? { source: record.source } : {}),
  };
}

/** Longest local_dir accepted (a path, not a payload). */
const MAX_DIR_LENGTH = 4096;

/** Name and tenant rules of every registration. */
function validateNames(tenant: string, name: string): void {
  if (!NAME_PATTERN.test(name))
    throw new InvalidArgumentError(
      `adapter name ${JSON.stringify(name.slice(0, 140))} must be 1-128 characters of [A-Za-z0-9_-], starting with a letter or digit`,
    );
  if (!NAME_PATTERN.test(tenant)) throw new InvalidArgumentError("invalid tenant");
}

function validateSource(tenant: string, name: string, dir: string): void {
  validateNames(tenant, name);
  if (dir === "") throw new InvalidArgumentError("source.local_dir is required");
  if (dir.length > MAX_DIR_LENGTH || dir.includes("\0"))
    throw new InvalidArgumentError(`source.local_dir must be a path of at most ${MAX_DIR_LENGTH} characters`);
}
