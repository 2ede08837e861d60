/**
 * The base worker: the engine (continuous batching over the base model) behind the BaseWorker gRPC
 * service, with LoRA from local adapters (coupled), remote LoRA servers (disaggregated) or both
 * (hybrid), registration and heartbeats to the provisioner, and adapter jobs for local adapters.
 */
import { randomUUID } from "node:crypto";
import {
  DeadlineExceededError,
  serverStreamHandler,
  unaryHandler,
  type Logger,
  type ServiceInstance,
} from "@loramesh/core";
import {
  Engine,
  Model,
  Tokenizer,
  type LoraBackend,
  type LoraSiteCall,
  type SequenceHandle,
  type SequenceResult,
} from "@loramesh/engine";
import { ExecutorAgent, PlacementCache, startAdapterJobWorker } from "@loramesh/mesh";
import {
  BaseWorkerServiceService,
  ExecutorKind,
  FinishReason,
  LoraMode,
  SERVICE_NAMES,
  type BaseWorkerServiceServer,
  type SequenceEvent,
} from "@loramesh/proto";
import type { Worker } from "bullmq";
import { LocalAdapters } from "./local-adapters";
import { HybridLoraBackend, RemoteLoraBackend } from "./remote-lora-backend";
import { WorkerTelemetry } from "./worker-telemetry";

export type WorkerMode = "coupled" | "disaggregated" | "hybrid";

export interface BaseWorkerOptions {
  executorId: string;
  advertiseAddress: string;
  hostId: string;
  provisionerAddress: string;
  redisUrl: string;
  modelDir: string;
  mode: WorkerMode;
  /** Fraction of LoRA sites that get a span in traced requests. */
  siteSpanRatio: number;
  /** Adapter budget for local adapters (coupled, hybrid). */
  localCapacityBytes: number;
  sharedMemory: boolean;
  maxBatchTokens: number;
  kvBlocks: number | undefined;
  logger: Logger;
}

const MODE: Record<WorkerMode, LoraMode> = {
  coupled: LoraMode.LORA_MODE_COUPLED,
  disaggregated: LoraMode.LORA_MODE_DISAGGREGATED,
  hybrid: LoraMode.LORA_MODE_HYBRID,
};

const FINISH: Record<SequenceResult["finishReason"], FinishReason> = {
  eos: FinishReason.FINISH_REASON_EOS,
  stop: FinishReason.FINISH_REASON_STOP,
  length: FinishReason.FINISH_REASON_LENGTH,
  cancelled: FinishReason.FINISH_REASON_CANCELLED,
};

export async function createBaseWorkerServices(options: BaseWorkerOptions): Promise<ServiceInstance> {
  const { logger } = options;
  const model = Model.load(options.modelDir);
  const tokenizer = Tokenizer.load(options.modelDir, model.config.eosTokenIds);
  const placement = new PlacementCache(options.provisionerAddress, logger);
  let agent: ExecutorAgent | undefined;
  const local =
    options.mode !== "disaggregated"
      ? new LocalAdapters(model.config, options.localCapacityBytes, logger, () => void agent?.beatNow())
      : undefined;
  const remote =
    options.mode !== "coupled"
      ? new RemoteLoraBackend(model.config, placement, {
          workerId: options.executorId,
          hostId: options.hostId,
          sharedMemory: options.sharedMemory,
          logger,
        })
      : undefined;
  const inner: LoraBackend =
    options.mode === "coupled"
      ? (local as LocalAdapters).backend
      : options.mode === "disaggregated"
        ? (remote as RemoteLoraBackend)
        : new HybridLoraBackend((local as LocalAdapters).backend, remote as RemoteLoraBackend);
  // Which transport a site call used, for spans and the latency histogram.
  const transportOf = (call: LoraSiteCall): string => {
    if (options.mode === "coupled") return "local";
    const transports = new Set(Object.values(remote?.transports() ?? {}));
    const remoteName =
      transports.size === 1 ? ([...transports][0] as string) : transports.size === 0 ? "grpc" : "mixed";
    if (options.mode === "disaggregated") return remoteName;
    const isLocal = call.adapters.map((id) => local?.backend.has(id) ?? false);
    const used = new Set(
      Array.from(call.rowAdapter)
        .filter((a) => a >= 0)
        .map((a) => isLocal[a]),
    );
    return used.size === 2 ? "hybrid" : used.has(true) ? "local" : remoteName;
  };
  const tel = new WorkerTelemetry(options.siteSpanRatio, transportOf);
  const engine = new Engine(model, tokenizer, {
    lora: tel.wrap(inner),
    maxBatchTokens: options.maxBatchTokens,
    ...(options.kvBlocks ? { kvBlocks: options.kvBlocks } : {}),
    logger,
    stepHook: tel.step,
  });
  tel.observe(engine, remote);
  const requests: Record<string, number> = {};

  let jobWorker: Worker | undefined;
  if (local) {
    jobWorker = startAdapterJobWorker(
      options.redisUrl,
      options.executorId,
      {
        load: (data, progress) => local.load(data.adapterId, data.dir, progress),
        unload: async (data) => local.unload(data.adapterId),
      },
      logger,
    );
  }

  const implementation: BaseWorkerServiceServer = {
    submit: serverStreamHandler(logger, async (request, call) => {
      const adapterId = request.adapterId === "" ? undefined : request.adapterId;
      const s = request.sampling;
      // Register the request's trace context before the engine can schedule the sequence.
      const sequenceId = request.sequenceId || randomUUID();
      const key = adapterId ?? "";
      tel.begin(sequenceId, key);
      let handle: SequenceHandle;
      try {
        handle = engine.submit(
          {
            id: sequenceId,
            promptIds: request.promptTokenIds,
            ...(adapterId !== undefined ? { adapterId } : {}),
            sampling: {
              maxTokens: s?.maxTokens ?? 0,
              temperature: s?.temperature ?? 0,
              topP: s?.topP ?? 0,
              topK: s?.topK ?? 0,
              seed: s?.seed,
              stop: s?.stop ?? [],
              stopTokenIds: s?.stopTokenIds ?? [],
              ignoreEos: s?.ignoreEos ?? false,
              minTokens: s?.minTokens ?? 0,
            },
          },
          (update) => {
            if (!call.cancelled)
              call.write({
                sequenceId,
                tokenIds: update.tokenIds,
                finishReason: 0,
                text: update.text,
              } satisfies Partial<SequenceEvent>);
          },
        );
      } catch (err) {
        tel.end(sequenceId, key, 0);
        throw err;
      }
      requests[key] = (requests[key] ?? 0) + 1;
      // Client cancellation and deadlines both end the call; the sequence (and its cache) go too.
      const cancel = (): void => handle.cancel();
      call.on("cancelled", cancel);
      const result = await handle.result.catch((err: unknown) => {
        tel.end(sequenceId, key, 0);
        throw err;
      });
      tel.end(sequenceId, key, result.tokenIds.length);
      call.off("cancelled", cancel);
      if (call.cancelled) {
        const deadline = call.getDeadline();
        const passed = deadline instanceof Date ? deadline.getTime() <= Date.now() : Number(deadline) <= Date.now();
        if (passed) throw new DeadlineExceededError("the deadline passed before generation finished");
        return;
      }
      call.write({
        sequenceId: result.id,
        tokenIds: [],
        text: "",
        finishReason: FINISH[result.finishReason],
        usage: { promptTokens: result.promptTokens, completionTokens: result.tokenIds.length },
        timings: {
          queueMs: result.timings.queueMs,
          timeToFirstTokenMs: result.timings.timeToFirstTokenMs,
          timePerOutputTokenMs: result.timings.timePerOutputTokenMs,
          totalMs: result.timings.totalMs,
        },
      });
    }),
    cancel: unaryHandler(logger, async (request) => ({ wasRunning: engine.cancel(request.sequenceId) })),
    getStats: unaryHandler(logger, async () => {
      const st = engine.stats();
      return {
        runningSequences: st.running,
        waitingSequences: st.waiting,
        kvBlocksUsed: st.kvBlocksUsed,
        kvBlocksTotal: st.kvBlocksTotal,
        steps: st.steps,
        generatedTokens: st.generatedTokens,
        finishedSequences: st.finished,
        cancelledSequences: st.cancelled,
        loraMode: options.mode,
      };
    }),
  };

  const startAgent = (address: string): void => {
    agent = new ExecutorAgent(
      options.provisionerAddress,
      {
        executorId: options.executorId,
        kind: ExecutorKind.EXECUTOR_KIND_BASE_WORKER,
        address: options.advertiseAddress || address,
        hostId: options.hostId,
        adapterCapacityBytes: local ? options.localCapacityBytes : 0,
        maxRank: 256,
        baseModel: options.modelDir,
        loraMode: MODE[options.mode],
        device: "cpu",
      },
      {
        load: () => {
          const st = engine.stats();
          return {
            active: st.running,
            queued: st.waiting,
            adapterBytesUsed: local?.bytesUsed ?? 0,
            tokensPerSecond: 0,
            rankWeightedLoad: 0,
          };
        },
        residentAdapterIds: () => local?.ids() ?? [],
        takeAdapterRequests: () => {
          const out = { ...requests };
          for (const k of Object.keys(requests)) delete requests[k];
          return out;
        },
      },
      logger,
    );
    void agent.start();
  };

  return {
    services: [{ name: SERVICE_NAMES.baseWorker[0], definition: BaseWorkerServiceService, implementation }],
    onServing: startAgent,
    close: async () => {
      agent?.stop();
      await jobWorker?.close();
      remote?.close();
      placement.close();
    },
  };
}
