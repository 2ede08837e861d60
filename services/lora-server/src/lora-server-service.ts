/**
 * The LoRA server: an adapter pool, the per-site LoRA stream (inline tensors, or activations in a
 * same-host shared-memory region with gRPC carrying only control messages), cross-worker batching,
 * adapter load/unload jobs from BullMQ, and registration with the provisioner.
 */
import { hostname } from "node:os";
import type { ServerDuplexStream } from "@grpc/grpc-js";
import {
  bidiStreamHandler,
  decodeTensor,
  encodeTensor,
  grpcCodeOf,
  unaryHandler,
  type Logger,
  type ServiceInstance,
} from "@loramesh/core";
import { InvalidArgumentError, isLoraMeshError } from "@loramesh/errors";
import { loadModelConfig, siteShape, type LoraSite } from "@loramesh/formats";
import { ExecutorAgent, startAdapterJobWorker } from "@loramesh/mesh";
import { native } from "@loramesh/native";
import {
  DType,
  ExecutorKind,
  LoraServerServiceService,
  LoraSite as ProtoSite,
  SERVICE_NAMES,
  type LoraResult,
  type LoraServerServiceServer,
  type LoraStreamRequest,
  type LoraWork,
} from "@loramesh/proto";
import { status } from "@grpc/grpc-js";
import { extractContext, SpanKind, SpanStatusCode, telemetry } from "@loramesh/telemetry";
import { AdapterPool } from "./adapter-pool";
import { loraServerMetrics } from "./lora-server-metrics";
import { SiteBatcher } from "./site-batcher";

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
  logger: Logger;
}

const SITE_OF: Partial<Record<ProtoSite, LoraSite>> = {
  [ProtoSite.LORA_SITE_QKV]: "qkv",
  [ProtoSite.LORA_SITE_O]: "o",
  [ProtoSite.LORA_SITE_GATE_UP]: "gate_up",
  [ProtoSite.LORA_SITE_DOWN]: "down",
};

/** Identifies the machine, so peers can tell whether shared memory is possible. */
export function localHostId(): string {
  return process.env["LORAMESH_HOST_ID"] ?? hostname();
}

export async function createLoraServerServices(options: LoraServerOptions): Promise<ServiceInstance> {
  const { logger } = options;
  const model = loadModelConfig(options.modelDir);
  let agent: ExecutorAgent | undefined;
  const pool = new AdapterPool(
    model,
    options.capacityBytes,
    options.hostCacheBytes,
    logger,
    () => void agent?.beatNow(),
  );
  const batcher = new SiteBatcher(pool, options.batchWindowMs);
  const metrics = loraServerMetrics(pool, batcher, () => openStreams);
  let nextStream = 0;
  let openStreams = 0;
  let rowsServed = 0;
  let lastRows = 0;
  let lastTime = Date.now();

  const jobWorker = startAdapterJobWorker(
    options.redisUrl,
    options.executorId,
    {
      load: async (data, progress) => pool.load(data.adapterId, data.dir, data.contentHash, data.pin, progress),
      unload: async (data) => void pool.unload(data.adapterId),
    },
    logger,
  );

  const startAgent = (address: string): void => {
    agent = new ExecutorAgent(
      options.provisionerAddress,
      {
        executorId: options.executorId,
        kind: ExecutorKind.EXECUTOR_KIND_LORA_SERVER,
        address: options.advertiseAddress || address,
        hostId: localHostId(),
        adapterCapacityBytes: options.capacityBytes,
        maxRank: 256,
        baseModel: options.modelDir,
        loraMode: 0,
        device: "cpu",
      },
      {
        load: () => {
          const now = Date.now();
          const rate = ((rowsServed - lastRows) * 1000) / Math.max(1, now - lastTime);
          lastRows = rowsServed;
          lastTime = now;
          return {
            active: openStreams,
            queued: 0,
            adapterBytesUsed: pool.bytesUsed,
            tokensPerSecond: rate,
            rankWeightedLoad: 0,
          };
        },
        residentAdapterIds: () => pool.stats().residentIds,
        takeAdapterRequests: () => ({}),
      },
      logger,
    );
    void agent.start();
  };

  const execute = async (call: ServerDuplexStream<LoraStreamRequest, LoraResult>): Promise<void> => {
    openStreams++;
    const streamId = ++nextStream;
    let shared: Uint8Array | undefined;
    let order: Promise<void> = Promise.resolve();
    const respond = (result: LoraResult): void => {
      if (!call.writableEnded && !call.cancelled) call.write(result);
    };
    try {
      for await (const message of call as AsyncIterable<LoraStreamRequest>) {
        const kind = message.kind;
        if (kind?.$case === "open") {
          const open = kind.value;
          if (open.sharedMemoryName !== "") {
            if (open.hostId !== localHostId())
              throw new InvalidArgumentError("shared memory offered by a worker on another host");
            shared = new Uint8Array(native.mapSharedMemory(open.sharedMemoryName, open.sharedMemoryBytes, false));
          }
          logger.info("worker stream opened", { workerId: open.workerId, sharedMemory: shared !== undefined });
          continue;
        }
        if (kind?.$case !== "work") continue;
        const work = kind.value;
        // Compute concurrently, answer in request order.
        const computed = handleWork(work, shared, streamId);
        order = order.then(async () => {
          try {
            respond(await computed);
          } catch (err) {
            respond({
              stepId: work.stepId,
              layer: work.layer,
              site: work.site,
              error: (err as Error).message,
              errorCode: isLoraMeshError(err) ? grpcCodeOf(err.kind) : status.INTERNAL,
            });
          }
        });
      }
      await order;
    } finally {
      openStreams--;
      batcher.closeStream(streamId);
    }
  };

  // The site runs inside the worker's trace (its context travels in the work message).
  const handleWork = (work: LoraWork, shared: Uint8Array | undefined, streamId: number): Promise<LoraResult> =>
    telemetry().tracingEnabled && work.traceparent !== ""
      ? telemetry().tracer.startActiveSpan(
          "lora.site.execute",
          {
            kind: SpanKind.SERVER,
            attributes: {
              "loramesh.layer": work.layer,
              "loramesh.site": ProtoSite[work.site],
              "loramesh.adapters": work.adapterIds.join(","),
              "loramesh.transport": work.activations?.$case === "shared" ? "shm" : "grpc",
            },
          },
          extractContext({
            traceparent: work.traceparent,
            ...(work.tracestate ? { tracestate: work.tracestate } : {}),
          }),
          async (span) => {
            try {
              const result = await executeWork(work, shared, streamId);
              span.setAttribute("loramesh.rows", work.rowAdapter.length);
              return result;
            } catch (err) {
              span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
              throw err;
            } finally {
              span.end();
            }
          },
        )
      : executeWork(work, shared, streamId);

  const executeWork = async (work: LoraWork, shared: Uint8Array | undefined, streamId: number): Promise<LoraResult> => {
    const site = SITE_OF[work.site];
    if (!site) throw new InvalidArgumentError(`unknown LoRA site ${work.site}`);
    if (work.layer >= model.numLayers) throw new InvalidArgumentError(`layer ${work.layer} does not exist`);
    const { hIn, nOut: denseOut } = siteShape(model, site);
    const nOut = denseOut;
    let x: Float32Array;
    let rows: number;
    const act = work.activations;
    if (act?.$case === "inline") {
      const t = decodeTensor(act.value);
      if (t.dtype !== DType.DTYPE_F32 || t.shape.length !== 2 || t.shape[1] !== hIn)
        throw new InvalidArgumentError(`activations must be f32 [rows, ${hIn}]`);
      x = t.data;
      rows = t.shape[0] as number;
    } else if (act?.$case === "shared") {
      if (!shared) throw new InvalidArgumentError("shared-memory activations on a stream without a shared region");
      const s = act.value;
      rows = s.shape[0] ?? 0;
      const bytes = rows * hIn * 4;
      if (
        s.dtype !== DType.DTYPE_F32 ||
        s.shape.length !== 2 ||
        s.shape[1] !== hIn ||
        s.offset % 4 !== 0 ||
        s.offset + bytes > shared.byteLength
      ) {
        throw new InvalidArgumentError("shared-memory activations out of bounds or of the wrong shape");
      }
      x = new Float32Array(shared.buffer, shared.byteOffset + s.offset, rows * hIn).slice();
    } else {
      throw new InvalidArgumentError("work has no activations");
    }
    if (work.rowAdapter.length !== rows)
      throw new InvalidArgumentError(`row_adapter has ${work.rowAdapter.length} entries for ${rows} rows`);
    const rowAdapterIds = work.rowAdapter.map((i) => {
      if (i < 0) return undefined;
      const id = work.adapterIds[i];
      if (id === undefined) throw new InvalidArgumentError(`row_adapter index ${i} is outside adapter_ids`);
      return id;
    });
    const moe = work.rowExpert.length > 0;
    if (moe && (work.rowExpert.length !== rows || model.numExperts === 0))
      throw new InvalidArgumentError("row_expert must have one entry per row on an MoE model");
    const delta = await batcher.submit(
      {
        layer: work.layer,
        site,
        x,
        rows,
        hIn,
        nOut,
        rowAdapterIds,
        rowExpert: moe ? Int32Array.from(work.rowExpert) : undefined,
      },
      streamId,
    );
    rowsServed += rows;
    metrics.work(rowAdapterIds, act.$case === "shared" ? "shm" : "grpc", x.byteLength, delta.byteLength);
    const base = { stepId: work.stepId, layer: work.layer, site: work.site, error: "", errorCode: 0 };
    if (act.$case === "shared" && shared) {
      const bytes = delta.byteLength;
      if (work.resultOffset % 4 !== 0 || work.resultOffset + bytes > shared.byteLength)
        throw new InvalidArgumentError("result offset out of bounds");
      new Float32Array(shared.buffer, shared.byteOffset + work.resultOffset, delta.length).set(delta);
      return {
        ...base,
        delta: { $case: "shared", value: { offset: work.resultOffset, dtype: DType.DTYPE_F32, shape: [rows, nOut] } },
      };
    }
    return {
      ...base,
      delta: { $case: "inline", value: encodeTensor({ dtype: DType.DTYPE_F32, shape: [rows, nOut], data: delta }) },
    };
  };

  const implementation: LoraServerServiceServer = {
    execute: bidiStreamHandler(logger, execute),
    loadAdapter: unaryHandler(logger, async (request) => {
      const dir = request.source?.source?.value ?? "";
      const { sizeBytes, alreadyResident } = await pool.load(request.adapterId, dir, request.contentHash, request.pin);
      return { sizeBytes, alreadyResident };
    }),
    unloadAdapter: unaryHandler(logger, async (request) => ({ wasResident: pool.unload(request.adapterId) })),
    getStats: unaryHandler(logger, async () => {
      const s = pool.stats();
      return {
        residentAdapterIds: s.residentIds,
        poolBytesUsed: s.bytesUsed,
        poolBytesCapacity: s.bytesCapacity,
        evictions: s.evictions,
        openStreams,
        nativeCalls: batcher.stats.nativeCalls,
        workItems: batcher.stats.workItems,
        rows: batcher.stats.rows,
      };
    }),
  };

  return {
    services: [{ name: SERVICE_NAMES.loraServer[0], definition: LoraServerServiceService, implementation }],
    onServing: startAgent,
    close: async () => {
      agent?.stop();
      await jobWorker.close();
    },
  };
}
