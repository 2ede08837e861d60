#!/usr/bin/env node
/** Process entry of the router: the public gRPC API. */
import { addressOption, runServiceProcess } from "@loramesh/core";
import { createRouterServices } from "./router-service";

void runServiceProcess({
  name: "router",
  summary: "public gRPC API: tenants, admission, routing to base workers, token streaming",
  options: {
    listen: addressOption({
      flag: "listen",
      env: "LISTEN_ADDRESS",
      default: "127.0.0.1:50051",
      description: "address to serve the public API on",
    }),
    provisioner: addressOption({
      flag: "provisioner",
      env: "PROVISIONER_ADDRESS",
      description: "provisioner gRPC address",
    }),
  },
  create: async (config, logger) => createRouterServices({ provisionerAddress: config.provisioner, logger }),
});
