import { type Logger, type ServiceInstance } from "@loramesh/core";
import { LoraServerServiceService, SERVICE_NAMES } from "@loramesh/proto";

export interface LoraServerOptions {
  provisionerAddress: string;
  logger: Logger;
}

/**
 * The LoRA server's gRPC service. The foundation serves health and reflection; the adapter pool and
 * the LoRA stream arrive with the native and mesh issues (UNIMPLEMENTED until then).
 */
export function createLoraServerServices(options: LoraServerOptions): ServiceInstance {
  options.logger.info("lora server configured", { provisioner: options.provisionerAddress });
  return {
    services: [{ name: SERVICE_NAMES.loraServer[0], definition: LoraServerServiceService, implementation: {} }],
    close: async () => undefined,
  };
}
