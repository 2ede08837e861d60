#!/usr/bin/env node
/** Process entry of a LoRA server: batched heterogeneous-rank LoRA for many base workers. */
import { addressOption, runServiceProcess } from "@loramesh/core";
import { createLoraServerServices } from "./lora-server-service";

void runServiceProcess({
  name: "lora-server",
  summary: "holds adapters and executes batched heterogeneous-rank LoRA for many base workers",
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
  create: async (config, logger) => createLoraServerServices({ provisionerAddress: config.provisioner, logger }),
});
