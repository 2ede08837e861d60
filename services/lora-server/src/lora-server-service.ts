/**
 * The LoRA server, wired: an adapter pool, the per-site Execute stream (`@loramesh/lora-wire`) over
 * a site executor and the cross-worker batcher, adapter load/unload jobs from BullMQ, and
 * registration with the provisioner.
 */
import { hostname } from "node:os";
import { bidiStreamHandler, unaryHandler, type Logger, type ServiceInstance } from "@loramesh/core";
import { loadModelConfig } from "@loramesh/formats";
import { adapterPeerService, AdapterMaterializer, startAdapterJobWorker, type ExecutorAgent } from "@loramesh/mesh";
import { LoraServerServiceService, SERVICE_NAMES, type LoraServerServiceServer } from "@loramesh/proto";
import { AdapterCache } from "@loramesh/sources";
import { AdapterPool } from "./adapter-pool";
import { startLoraServerAgent } from "./lora-server-agent";
import { loraServerMetrics } from "./lora-server-metrics";
import { LoraStreamHandler } from "./lora-stream-handler";
import { SiteBatcher } from "./site-batcher";
import { LoraSiteExecutor } from "./site-executor";

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
  const pool = new AdapterPool({
    model,
    capacityBytes: options.capacityBytes,
    hostCacheBytes: options.hostCacheBytes,
    logger,
    onChange: () => void agent?.beatNow(),
    layerwise: options.layerwiseLoading ?? true,
  });
  const batcher = new SiteBatcher({ pool, windowMs: options.batchWindowMs });
  const metrics = loraServerMetrics(pool, batcher, () => streams.openStreams);
  const executor = new LoraSiteExecutor({
    model,
    batcher,
    layers: pool.layers,
    ...(options.layerWaitMs !== undefined ? { layerWaitMs: options.layerWaitMs } : {}),
    onServed: (work, ids, delta) => metrics.work(ids, work.transport, work.x.byteLength, delta.byteLength),
  });
  const streams = new LoraStreamHandler({ hostId: localHostId(), executor, batcher, logger });
  const files = new AdapterMaterializer(
    new AdapterCache({ root: options.adapterCacheDir, limitBytes: options.adapterCacheBytes }),
    options.executorId,
    logger,
  );
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
  const implementation = loraServerHandlers(pool, files, batcher, streams, logger);
  return {
    services: [
      { name: SERVICE_NAMES.loraServer[0], definition: LoraServerServiceService, implementation },
      adapterPeerService(files.lookup, logger),
    ],
    onServing: (address) => {
      agent = startLoraServerAgent({
        ...options,
        address: options.advertiseAddress || address,
        hostId: localHostId(),
        pool,
        openStreams: () => streams.openStreams,
        rowsServed: () => executor.rowsServed,
      });
    },
    close: async () => {
      agent?.stop();
      await jobWorker.close();
    },
  };
}

/** The LoraServer gRPC handlers: proto ↔ domain mapping only. */
function loraServerHandlers(
  pool: AdapterPool,
  files: AdapterMaterializer,
  batcher: SiteBatcher,
  streams: LoraStreamHandler,
  logger: Logger,
): LoraServerServiceServer {
  return {
    execute: bidiStreamHandler(logger, (call) => streams.serve(call)),
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
        nativeCalls: batcher.stats.nativeCalls,
        workItems: batcher.stats.workItems,
        rows: batcher.stats.rows,
        adapterFilesFromCache: files.counts.cache,
        adapterFilesFromPeer: files.counts.peer,
        adapterFilesFromSource: files.counts.source,
      };
    }),
  };
}
