#!/usr/bin/env node
/** Process entry of a base worker: runs the base model with continuous batching. */
import "./otel";
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import {
  addressOption,
  booleanOption,
  enumOption,
  intOption,
  numberOption,
  runServiceProcess,
  stringOption,
} from "@loramesh/core";
import { createBaseWorkerServices } from "./base-worker-service";

void runServiceProcess({
  name: "base-worker",
  summary: "runs the base model with continuous batching; LoRA through a local or remote backend",
  options: {
    listen: addressOption({
      flag: "listen",
      env: "LISTEN_ADDRESS",
      default: "127.0.0.1:0",
      description: "address to serve on",
    }),
    advertise: stringOption({
      flag: "advertise",
      env: "ADVERTISE_ADDRESS",
      default: "",
      description: "address peers use to reach this worker (default: the bound address)",
    }),
    provisioner: addressOption({
      flag: "provisioner",
      env: "PROVISIONER_ADDRESS",
      description: "provisioner gRPC address",
    }),
    redisUrl: stringOption({
      flag: "redis-url",
      env: "REDIS_URL",
      description: "Redis for adapter jobs (redis://HOST:PORT or unix:/PATH)",
    }),
    model: stringOption({ flag: "model", env: "LORAMESH_MODEL", description: "base model directory" }),
    mode: enumOption({
      flag: "mode",
      env: "LORA_MODE",
      default: "disaggregated",
      values: ["coupled", "disaggregated", "hybrid"] as const,
      description: "where LoRA runs",
    }),
    executorId: stringOption({
      flag: "executor-id",
      env: "EXECUTOR_ID",
      default: "",
      description: "stable id (default: worker-<random>)",
    }),
    capacityMiB: numberOption({
      flag: "adapter-capacity-mib",
      env: "ADAPTER_CAPACITY_MIB",
      default: 256,
      min: 0,
      description: "budget for local adapters (coupled, hybrid)",
    }),
    sharedMemory: booleanOption({
      flag: "shared-memory",
      env: "LORAMESH_SHARED_MEMORY",
      default: true,
      description: "use shared memory with same-host LoRA servers",
    }),
    maxBatchTokens: intOption({
      flag: "max-batch-tokens",
      env: "MAX_BATCH_TOKENS",
      default: 512,
      min: 1,
      description: "tokens per engine step",
    }),
    siteSpanRatio: numberOption({
      flag: "lora-site-span-ratio",
      env: "LORAMESH_LORA_SITE_SPAN_RATIO",
      default: 0.05,
      min: 0,
      max: 1,
      description: "fraction of LoRA sites that get their own span in traced requests",
    }),
    kvBlocks: intOption({
      flag: "kv-blocks",
      env: "KV_BLOCKS",
      default: 0,
      min: 0,
      description: "KV-cache blocks (0: 256 MiB worth)",
    }),
  },
  create: async (config, logger) =>
    createBaseWorkerServices({
      executorId: config.executorId || `worker-${randomBytes(4).toString("hex")}`,
      advertiseAddress: config.advertise,
      hostId: process.env["LORAMESH_HOST_ID"] ?? hostname(),
      provisionerAddress: config.provisioner,
      redisUrl: config.redisUrl,
      modelDir: config.model,
      mode: config.mode,
      localCapacityBytes: Math.floor(config.capacityMiB * 1024 * 1024),
      sharedMemory: config.sharedMemory,
      maxBatchTokens: config.maxBatchTokens,
      siteSpanRatio: config.siteSpanRatio,
      kvBlocks: config.kvBlocks || undefined,
      logger,
    }),
});
