#!/usr/bin/env node
/** Process entry of a base worker: runs the base model with continuous batching. */
import { addressOption, runServiceProcess } from "@loramesh/core";
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
    provisioner: addressOption({
      flag: "provisioner",
      env: "PROVISIONER_ADDRESS",
      description: "provisioner gRPC address",
    }),
  },
  create: async (config, logger) => createBaseWorkerServices({ provisionerAddress: config.provisioner, logger }),
});
