import { type Logger, type ServiceInstance } from "@loramesh/core";
import { BaseWorkerServiceService, SERVICE_NAMES } from "@loramesh/proto";

export interface BaseWorkerOptions {
  provisionerAddress: string;
  logger: Logger;
}

/**
 * The base worker's gRPC service. The foundation serves health and reflection; the engine behind
 * Submit/Cancel/GetStats arrives with the engine and mesh issues (UNIMPLEMENTED until then).
 */
export function createBaseWorkerServices(options: BaseWorkerOptions): ServiceInstance {
  options.logger.info("base worker configured", { provisioner: options.provisionerAddress });
  return {
    services: [{ name: SERVICE_NAMES.baseWorker[0], definition: BaseWorkerServiceService, implementation: {} }],
    close: async () => undefined,
  };
}
