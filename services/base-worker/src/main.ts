#!/usr/bin/env node
/** Process entry of a base worker: runs the base model with continuous batching. */
import "./otel";
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { runServiceProcess } from "@loramesh/core";
import { applyDataplanePriority } from "@loramesh/mesh";
import { options } from "./options";
import { createBaseWorkerServices } from "./base-worker-service";
import { tuneHeap } from "./heap-tuning";

void runServiceProcess({
  name: "base-worker",
  internal: true,
  summary: "runs the base model with continuous batching; LoRA through a local or remote backend",
  options,
  create: async (config, logger) => {
    // Before the service starts a step, pool or ring thread: they read it when they start.
    applyDataplanePriority(config.dataplanePriority);
    // Before the model loads: its start-up collections would otherwise set a ~4x heap limit.
    const heap = tuneHeap(config.heapGrowingPercent);
    const services = await createBaseWorkerServices({
      executorId: config.executorId || `worker-${randomBytes(4).toString("hex")}`,
      advertiseAddress: config.advertise,
      hostId: process.env["LORAMESH_HOST_ID"] ?? hostname(),
      provisionerAddress: config.provisioner,
      redisUrl: config.redisUrl,
      modelDir: config.model,
      mode: config.mode,
      localCapacityBytes: Math.floor(config.capacityMiB * 1024 * 1024),
      sharedMemory: config.sharedMemory,
      loraTransport: config.loraTransport,
      maxBatchTokens: config.maxBatchTokens,
      siteSpanRatio: config.siteSpanRatio,
      kvBlocks: config.kvBlocks || undefined,
      loraTimeoutMs: config.loraTimeoutMs,
      loraFailoverMs: config.loraFailoverMs,
      adapterCacheDir: config.adapterCache,
      adapterCacheBytes: config.adapterCacheMiB * 1024 * 1024,
      prefixCache: config.prefixCache,
      layerwiseLoading: config.layerwiseLoading,
      layerWaitMs: config.layerWaitMs,
      ...(config.stepProfile ? { stepProfile: config.stepProfile, stepSeries: config.stepSeries } : {}),
      logger,
    });
    // The loader's garbage goes now, not in a long pause under load (~30 s in, m15v).
    if (heap.collect()) logger.debug("heap collected after start-up", { growingPercent: heap.growingPercent });
    return services;
  },
});
