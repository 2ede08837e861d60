/**
 * The ProvisionerService gRPC handlers: each maps protobuf to the domain, calls one domain method,
 * and maps the answer back. Errors go through the shared handler wrappers' mapper.
 */
import { defaultMiddleware, serverStreamHandler, unaryHandler, type Logger } from "@loramesh/core";
import { InvalidArgumentError } from "@loramesh/errors";
import {
  AdapterState,
  JobState,
  type Adapter,
  type LoadJobStatus,
  type PlacementUpdate,
  type ProvisionerServiceServer,
} from "@loramesh/proto";
import type { JobPhase, JobView } from "./job-view";
import type { AdapterJobQueues } from "@loramesh/mesh";
import { watchLoad } from "./load-watch";
import { redisOutageMiddleware } from "./redis-outage";
import type { PlacementChanges } from "./placement-changes";
import type { AdapterPhase, AdapterView, PlacementView, Provisioner } from "./provisioner";

export interface HandlerDeps {
  provisioner: Provisioner;
  changes: PlacementChanges;
  jobs: AdapterJobQueues;
  heartbeatTtlMs: number;
  logger: Logger;
}

const ADAPTER_STATE: Record<AdapterPhase, AdapterState> = {
  registered: AdapterState.ADAPTER_STATE_REGISTERED,
  loading: AdapterState.ADAPTER_STATE_LOADING,
  ready: AdapterState.ADAPTER_STATE_READY,
  failed: AdapterState.ADAPTER_STATE_FAILED,
};

const JOB_STATE: Record<JobPhase, JobState> = {
  waiting: JobState.JOB_STATE_WAITING,
  active: JobState.JOB_STATE_ACTIVE,
  delayed: JobState.JOB_STATE_DELAYED,
  completed: JobState.JOB_STATE_COMPLETED,
  failed: JobState.JOB_STATE_FAILED,
  unknown: JobState.JOB_STATE_UNSPECIFIED,
};

export function toAdapter({ record, phase, error }: AdapterView): Adapter {
  return {
    name: record.name,
    tenant: record.tenant,
    rank: record.rank,
    alpha: record.alpha,
    targetModules: record.targetModules,
    sizeBytes: record.sizeBytes,
    contentHash: record.contentHash,
    source: record.source
      ? { source: { $case: "uri", value: record.source } }
      : { source: { $case: "localDir", value: record.dir } },
    state: ADAPTER_STATE[phase],
    error,
    createdUnixMs: record.createdUnixMs,
    adapterId: record.id,
  };
}

export function toLoadJobStatus(j: JobView): LoadJobStatus {
  const { phase, ...rest } = j;
  return { ...rest, state: JOB_STATE[phase] };
}

export function toPlacementUpdate(view: PlacementView): PlacementUpdate {
  return {
    epoch: view.epoch,
    snapshot: true,
    changed: view.adapters,
    removedAdapterIds: [],
    executors: view.executors,
  };
}

/** The handler wrappers with the provisioner's chain: the default one, then Redis outages as UNAVAILABLE. */
function wrappers(logger: Logger): {
  unary: <Req, Res>(fn: Parameters<typeof unaryHandler<Req, Res>>[1]) => ReturnType<typeof unaryHandler<Req, Res>>;
  stream: <Req, Res>(
    fn: Parameters<typeof serverStreamHandler<Req, Res>>[1],
  ) => ReturnType<typeof serverStreamHandler<Req, Res>>;
} {
  const chain = [...defaultMiddleware(), redisOutageMiddleware];
  return {
    unary: (fn) => unaryHandler(logger, fn, chain),
    stream: (fn) => serverStreamHandler(logger, fn, chain),
  };
}

export function provisionerHandlers(deps: HandlerDeps): ProvisionerServiceServer {
  const { provisioner: p, logger } = deps;
  const { unary, stream } = wrappers(logger);
  return {
    registerExecutor: unary(async ({ executor }) => {
      if (!executor) throw new InvalidArgumentError("executor is required");
      await p.registerExecutor(executor);
      return { heartbeatIntervalMs: p.heartbeatIntervalMs, ttlMs: p.ttlMs };
    }),
    heartbeat: unary(async (r) => {
      const { known, epoch } = await p.heartbeat(r.executorId, r.load, r.residentAdapterIds, r.adapterRequests);
      return { known, placementEpoch: epoch };
    }),
    getPlacement: unary(async ({ adapterIds }) => {
      const view = await p.snapshot();
      const wanted = new Set(adapterIds);
      const adapters = adapterIds.length > 0 ? view.adapters.filter((a) => wanted.has(a.adapterId)) : view.adapters;
      return { epoch: view.epoch, adapters, executors: view.executors };
    }),
    watchPlacement: stream((_request, call) =>
      streamPlacement(
        deps,
        (u) => call.write(u),
        () => call.writableEnded || call.cancelled,
        (done) => {
          call.on("cancelled", done);
          call.on("close", done);
        },
      ),
    ),
    moveAdapter: unary(async (r) => ({
      moveJobId: await p.move(r.tenant, r.name, r.fromExecutorId, r.toExecutorId),
    })),
    prefetchAdapter: unary(async (r) => ({ loadJobIds: await p.prefetch(r.adapterId) })),
    reportUnreachable: unary(async (r) => {
      if (!r.executorId) throw new InvalidArgumentError("executor_id is required");
      return { loadJobIds: await p.replicateAway(r.reporterId, r.executorId, r.adapterIds.slice(0, 1024)) };
    }),
    getLoadJob: unary(async ({ jobId }) => toLoadJobStatus(await p.loadJob(jobId))),
    registerAdapter: unary(async (r) => {
      const source = r.source?.source;
      const { view, jobIds } = await p.register(
        r.tenant,
        r.name,
        source?.$case === "uri" ? { uri: source.value } : { localDir: source?.value ?? "" },
      );
      return { adapter: toAdapter(view), adapterId: view.record.id, loadJobIds: jobIds };
    }),
    listAdapters: unary(async (r) => {
      const page = await p.list(r.tenant, r.pageToken, r.pageSize);
      return { adapters: page.adapters.map(toAdapter), nextPageToken: page.nextPageToken };
    }),
    getAdapter: unary(async (r) => toAdapter(await p.get(r.tenant, r.name))),
    deleteAdapter: unary(async (r) => {
      await p.remove(r.tenant, r.name);
      return {};
    }),
    watchAdapterLoad: stream(async (r, call) => {
      const { record } = await p.get(r.tenant, r.name);
      await watchLoad(
        {
          jobs: deps.jobs,
          changes: deps.changes,
          statuses: () => p.jobStatuses(record.id),
          resident: () => p.resident(record.id),
          heartbeatTtlMs: deps.heartbeatTtlMs,
        },
        (s) => call.write(toLoadJobStatus(s)),
        (cancel) => {
          if (call.cancelled) cancel();
          call.on("cancelled", cancel);
        },
      );
    }),
    getPlanInput: unary(async () => {
      const input = await p.planInput();
      return {
        adapters: input.adapters.map((a) => ({
          adapterId: a.id,
          rank: a.rank,
          sizeBytes: a.sizeBytes,
          requests: a.requests,
          share: a.share,
        })),
        requestRate: input.requestRate,
      };
    }),
  };
}

/** A snapshot now, then one after every placement change (coalesced while one is being sent). */
async function streamPlacement(
  deps: HandlerDeps,
  write: (u: PlacementUpdate) => void,
  ended: () => boolean,
  onDone: (done: () => void) => void,
): Promise<void> {
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
        if (!ended()) write(toPlacementUpdate(await deps.provisioner.snapshot()));
      } while (again);
    } finally {
      sending = false;
    }
  };
  const unsubscribe = deps.changes.subscribe(() => void send().catch(() => undefined));
  try {
    await send();
    await new Promise<void>((resolve) => onDone(resolve));
  } finally {
    unsubscribe();
  }
}
