#!/usr/bin/env node
/** Process entry of a LoRA server: batched heterogeneous-rank LoRA for many base workers. */
import "./otel";
import { randomBytes } from "node:crypto";
import { runServiceProcess } from "@loramesh/core";
import { applyDataplanePriority } from "@loramesh/mesh";
import { options } from "./options";
import { createLoraServerServices } from "./lora-server-service";

const MiB = 1024 * 1024;

void runServiceProcess({
  name: "lora-server",
  internal: true,
  summary: "holds adapters and executes batched heterogeneous-rank LoRA for many base workers",
  options,
  create: async (config, logger) => {
    // Before the service starts a step, pool or ring thread: they read it when they start.
    applyDataplanePriority(config.dataplanePriority);
    return createLoraServerServices({
      executorId: config.executorId || `lora-${randomBytes(4).toString("hex")}`,
      advertiseAddress: config.advertise,
      provisionerAddress: config.provisioner,
      redisUrl: config.redisUrl,
      modelDir: config.model,
      capacityBytes: config.capacityMiB * MiB,
      hostCacheBytes: config.hostCacheMiB * MiB,
      batchWindowMs: config.batchWindowMs,
      adapterCacheDir: config.adapterCache,
      adapterCacheBytes: config.adapterCacheMiB * MiB,
      layerwiseLoading: config.layerwiseLoading,
      layerWaitMs: config.layerWaitMs,
      logger,
    });
  },
});
