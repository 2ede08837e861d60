#!/usr/bin/env node
/** Process entry of the provisioner: placement state in Redis, adapter jobs in BullMQ. */
import "./otel";
import { runServiceProcess } from "@loramesh/core";
import { options } from "./options";
import { createProvisionerServices } from "./provisioner-service";

void runServiceProcess({
  name: "provisioner",
  internal: true,
  summary: "placement authority: adapter and executor registries and placement in Redis",
  options,
  create: (config, logger) =>
    createProvisionerServices({
      redisUrl: config.redisUrl,
      heartbeatTtlMs: config.heartbeatTtlMs,
      modelDir: config.model,
      adapterCacheDir: config.adapterCache,
      adapterCacheBytes: config.adapterCacheMiB * 1024 * 1024,
      policy: config.placementPolicy,
      maxReplicas: config.maxReplicas,
      rebalanceIntervalMs: config.rebalanceIntervalMs,
      drainMs: config.drainMs,
      planCoverage: config.planCoverage,
      planTpotMs: config.planTpotMs,
      adapterRoots: config.adapterRoots.split(",").filter((r) => r !== ""),
      maxAdapterBytes: config.maxAdapterMib * 1024 * 1024,
      logger,
    }),
});
