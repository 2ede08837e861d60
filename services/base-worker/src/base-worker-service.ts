/**
 * The base worker, wired: the engine (continuous batching over the base model) with LoRA from
 * local adapters (coupled), remote LoRA servers (disaggregated) or both (hybrid), the BaseWorker
 * gRPC handlers, registration and heartbeats to the provisioner, and adapter jobs for local adapters.
 */
import type { Logger, ServiceInstance } from "@loramesh/core";
import { Engine, Model } from "@loramesh/engine";
import { Tokenizer } from "@loramesh/formats";
import {
  adapterPeerService,
  AdapterMaterializer,
  PlacementCache,
  startAdapterJobWorker,
  type ExecutorAgent,
} from "@loramesh/mesh";
import { BaseWorkerServiceService, SERVICE_NAMES } from "@loramesh/proto";
import { AdapterCache } from "@loramesh/sources";
import { ucxSupport } from "@loramesh/lora-wire";
import { transportPolicy, type LoraTransportChoice } from "./backends/lora-transport";
import { createWorkerBackends, type WorkerMode } from "./backends/worker-backends";
import { createBaseWorkerHandlers } from "./base-worker-handlers";
import { startWorkerAgent } from "./worker-agent";
import { WorkerSequences } from "./worker-sequences";
import { StepProfile } from "./step-profile";
import { WorkerTelemetry } from "./worker-telemetry";

export type { WorkerMode } from "./backends/worker-backends";

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
  /** Load local adapters layer by layer (default on); a site waits at most `layerWaitMs` for its layer. */
  layerwiseLoading?: boolean;
  layerWaitMs?: number;
  sharedMemory: boolean;
  /** Which wire to use per LoRA server (default auto). */
  loraTransport?: LoraTransportChoice;
  maxBatchTokens: number;
  kvBlocks: number | undefined;
  /** A LoRA round trip slower than this fails over (disaggregated, hybrid). */
  loraTimeoutMs?: number;
  /** How long a LoRA site may wait for a live holder before it fails. */
  loraFailoverMs?: number;
  /** The host's adapter cache (shared with the other processes of the host). */
  adapterCacheDir: string;
  adapterCacheBytes: number;
  /** Reuse KV blocks of shared prompt prefixes (default on). */
  prefixCache?: boolean;
  /** File to keep the engine's step periods in, by batch shape (validation of the simulator). */
  stepProfile?: string;
  /** Also keep each step in the step profile, written when the worker stops (the mesh bench). */
  stepSeries?: boolean;
  logger: Logger;
}

export async function createBaseWorkerServices(options: BaseWorkerOptions): Promise<ServiceInstance> {
  const { logger } = options;
  const model = Model.load(options.modelDir);
  const tokenizer = Tokenizer.load(options.modelDir, model.config.eosTokenIds);
  const placement = new PlacementCache(options.provisionerAddress, logger);
  let agent: ExecutorAgent | undefined;
  const ucx = ucxSupport();
  const transport = transportPolicy(options.loraTransport ?? "auto", options.sharedMemory, ucx.available);
  if (options.mode !== "coupled")
    logger.info("LoRA transport", {
      choice: transport.choice,
      sharedMemory: transport.sharedMemory,
      ucx: ucx.available ? ucx.version : "absent",
    });
  const backends = createWorkerBackends({
    mode: options.mode,
    config: model.config,
    placement,
    workerId: options.executorId,
    hostId: options.hostId,
    sharedMemory: options.sharedMemory,
    transport,
    localCapacityBytes: options.localCapacityBytes,
    onLocalChange: () => void agent?.beatNow(),
    ...(options.layerwiseLoading !== undefined ? { layerwiseLoading: options.layerwiseLoading } : {}),
    ...(options.layerWaitMs !== undefined ? { layerWaitMs: options.layerWaitMs } : {}),
    ...(options.loraTimeoutMs !== undefined ? { timeoutMs: options.loraTimeoutMs } : {}),
    ...(options.loraFailoverMs !== undefined ? { failoverMs: options.loraFailoverMs } : {}),
    onUnreachable: (serverId, adapterIds) => void agent?.reportUnreachable(serverId, adapterIds),
    logger,
  });
  const tel = new WorkerTelemetry(options.siteSpanRatio, backends.transportOf);
  // Ranks from the placement the provisioner streams: known in every mode, also for remote adapters.
  const profile = options.stepProfile
    ? new StepProfile(
        options.stepProfile,
        options.executorId,
        (id) => placement.ranks.get(id),
        options.stepSeries ?? false,
      )
    : undefined;
  const engine = new Engine(model, tokenizer, {
    lora: tel.wrap(backends.backend),
    maxBatchTokens: options.maxBatchTokens,
    prefixCache: options.prefixCache ?? true,
    ...(options.kvBlocks ? { kvBlocks: options.kvBlocks } : {}),
    logger,
    stepHook: tel.step,
    ...(profile ? { stepObserver: profile.record } : {}),
  });
  tel.observe(engine, backends.remote);
  const sequences = new WorkerSequences({ engine, telemetry: tel });
  const { local } = backends;
  const files = new AdapterMaterializer(
    new AdapterCache({ root: options.adapterCacheDir, limitBytes: options.adapterCacheBytes }),
    options.executorId,
    logger,
  );
  const jobWorker = local
    ? startAdapterJobWorker(
        options.redisUrl,
        options.executorId,
        {
          load: async (data, progress) => local.load(data.adapterId, (await files.materialize(data)).dir, progress),
          unload: async (data) => {
            files.forget(data.adapterId);
            return local.unload(data.adapterId);
          },
        },
        logger,
      )
    : undefined;
  const implementation = createBaseWorkerHandlers(sequences, options.mode, logger);
  return {
    services: [
      { name: SERVICE_NAMES.baseWorker[0], definition: BaseWorkerServiceService, implementation },
      adapterPeerService(files.lookup, logger),
    ],
    onServing: (address) => {
      agent = startWorkerAgent({ ...options, address: options.advertiseAddress || address, local, sequences });
    },
    close: async () => {
      agent?.stop();
      await jobWorker?.close();
      backends.remote?.close();
      placement.close();
      profile?.close();
    },
  };
}
