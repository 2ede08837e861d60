/**
 * The LoRA server, wired: an adapter pool, the per-site Execute stream (`@loramesh/lora-wire`) over
 * a site executor and the cross-worker batcher, the shared-memory ring server for same-host workers
 * and the UCX server for workers on other hosts (native threads computing on the pool's packed
 * weights), adapter load/unload jobs from BullMQ, and registration with the provisioner.
 */
import { hostname } from "node:os";
import { bidiStreamHandler, unaryHandler, type Logger, type ServiceInstance } from "@loramesh/core";
import { FailedPreconditionError } from "@loramesh/errors";
import { loadModelConfig } from "@loramesh/formats";
import { NativeSites, type SiteCounters } from "./native-sites";
import {
  adapterPeerService,
  startAdapterJobWorker,
  type AdapterMaterializer,
  type ExecutorAgent,
} from "@loramesh/mesh";
import { LoraServerServiceService, SERVICE_NAMES, type LoraServerServiceServer } from "@loramesh/proto";
import { AdapterPool } from "./adapter-pool";
import { startLoraServerAgent } from "./lora-server-agent";
import { loraServerMetrics } from "./lora-server-metrics";
import { LoraStreamHandler } from "./lora-stream-handler";
import { SiteBatcher } from "./site-batcher";
import { LoraSiteExecutor } from "./site-executor";
import { adapterFiles, peerFetchUcx } from "./peer-fetch";

export interface LoraServerOptions {
  executorId: string;
  /** Address other processes use to reach this server; empty: the bound address. */
  advertiseAddress: string;
  provisionerAddress: string;
  redisUrl: string;
  modelDir: string;
  capacityBytes: number;
  hostCacheBytes: number;
  /** Longest a work item waits for other workers' items for the same site. */
  batchWindowMs: number;
  /** The host's adapter cache (shared with the other processes of the host). */
  adapterCacheDir: string;
  adapterCacheBytes: number;
  /** Load adapters layer by layer, serving early layers while later ones load (default on). */
  layerwiseLoading?: boolean;
  /** Longest a site call waits for a layer of a loading adapter. */
  layerWaitMs?: number;
  /** A same-host worker that leaves a ring delta unread this long is detached. */
  ringTimeoutMs?: number;
  logger: Logger;
}

/** Identifies the machine, so peers can tell whether shared memory is possible. */
export function localHostId(): string {
  return process.env["LORAMESH_HOST_ID"] ?? hostname();
}

export async function createLoraServerServices(options: LoraServerOptions): Promise<ServiceInstance> {
  const { logger } = options;
  const model = loadModelConfig(options.modelDir);
  let agent: ExecutorAgent | undefined;
  const native = new NativeSites(model, { ...options, hostId: localHostId() }, logger);
  const pool = new AdapterPool({
    model,
    capacityBytes: options.capacityBytes,
    hostCacheBytes: options.hostCacheBytes,
    logger,
    onChange: () => {
      native.setTables(pool);
      void agent?.beatNow();
    },
    layerwise: options.layerwiseLoading ?? true,
  });
  const batcher = new SiteBatcher({ pool, windowMs: options.batchWindowMs });
  const counters = (): SiteCounters => {
    const n = native.stats();
    const b = batcher.stats;
    return { nativeCalls: b.nativeCalls + n.nativeCalls, workItems: b.workItems + n.workItems, rows: b.rows + n.rows };
  };
  const metrics = loraServerMetrics(
    pool,
    counters,
    () => streams.openStreams,
    () => native.ringStats(),
  );
  // The ring thread's per-adapter rows (its sites never pass through JavaScript).
  native.onRingRows = (rows) => metrics.ringRows(rows);
  const executor = new LoraSiteExecutor({
    model,
    batcher,
    layers: pool.layers,
    ...(options.layerWaitMs !== undefined ? { layerWaitMs: options.layerWaitMs } : {}),
    onServed: (work, ids, delta) => metrics.work(ids, work.transport, work.x.byteLength, delta.byteLength),
  });
  const rma = peerFetchUcx(logger);
  const files = adapterFiles(options, rma);
  const streams = new LoraStreamHandler({ executor, batcher, logger });
  const jobWorker = startAdapterJobWorker(
    options.redisUrl,
    options.executorId,
    {
      load: async (data, progress) => {
        if (!pool.has(data.adapterId)) await progress(0.05);
        const { dir } = pool.has(data.adapterId) ? { dir: data.dir } : await files.materialize(data);
        return pool.load(data.adapterId, dir, data.contentHash, data.pin, progress);
      },
      unload: async (data) => {
        files.forget(data.adapterId);
        pool.unload(data.adapterId);
      },
    },
    logger,
  );
  const implementation = loraServerHandlers(pool, files, counters, streams, native, logger);
  return {
    services: [
      { name: SERVICE_NAMES.loraServer[0], definition: LoraServerServiceService, implementation },
      adapterPeerService(files.lookup, logger, rma.holder),
    ],
    onServing: (address) => {
      native.ucx.advertise(options.advertiseAddress || address);
      rma.advertise(options.advertiseAddress || address);
      agent = startLoraServerAgent({
        ...options,
        address: options.advertiseAddress || address,
        hostId: localHostId(),
        pool,
        openStreams: () => streams.openStreams,
        rowsServed: () => executor.rowsServed + native.stats().rows,
      });
    },
    close: async () => {
      native.stop();
      rma.stop();
      agent?.stop();
      await jobWorker.close();
    },
  };
}

/** The LoraServer gRPC handlers: proto ↔ domain mapping only. */
function loraServerHandlers(
  pool: AdapterPool,
  files: AdapterMaterializer,
  counters: () => SiteCounters,
  streams: LoraStreamHandler,
  native: NativeSites,
  logger: Logger,
): LoraServerServiceServer {
  return {
    execute: bidiStreamHandler(logger, (call) => streams.serve(call)),
    attachSharedMemory: unaryHandler(logger, async (request) => {
      if (!native.ring) throw new FailedPreconditionError("shared memory is not available on this platform");
      const { name, bytes } = native.ring.attach(request.workerId, request.hostId);
      logger.info("ring attached", { workerId: request.workerId });
      return { name, bytes };
    }),
    attachUcx: unaryHandler(logger, async (request) => {
      const { host, port, key, version } = native.ucx.attach(request.workerId);
      logger.info("UCX worker attached", { workerId: request.workerId, listener: `${host}:${port}` });
      return { host, port, key, ucxVersion: version };
    }),
    loadAdapter: unaryHandler(logger, async (request) => {
      const source = request.source?.source;
      const { dir } = pool.has(request.adapterId)
        ? { dir: "" }
        : await files.materialize({
            adapterId: request.adapterId,
            dir: source?.$case === "localDir" ? source.value : "",
            source: source?.$case === "uri" ? source.value : "",
            contentHash: request.contentHash,
          });
      const { sizeBytes, alreadyResident } = await pool.load(request.adapterId, dir, request.contentHash, request.pin);
      return { sizeBytes, alreadyResident };
    }),
    unloadAdapter: unaryHandler(logger, async (request) => {
      files.forget(request.adapterId);
      return { wasResident: pool.unload(request.adapterId) };
    }),
    getStats: unaryHandler(logger, async () => {
      const s = pool.stats();
      return {
        residentAdapterIds: s.residentIds,
        poolBytesUsed: s.bytesUsed,
        poolBytesCapacity: s.bytesCapacity,
        evictions: s.evictions,
        openStreams: streams.openStreams,
        ...counters(),
        adapterFilesFromCache: files.counts.cache,
        adapterFilesFromPeer: files.counts.peer,
        adapterFilesFromSource: files.counts.source,
      };
    }),
  };
}
