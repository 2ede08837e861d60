import { type Logger, type ServiceInstance } from "@loramesh/core";
import { AdapterServiceService, InferenceServiceService, SERVICE_NAMES } from "@loramesh/proto";

export interface RouterOptions {
  provisionerAddress: string;
  logger: Logger;
}

/**
 * The router's gRPC services. The foundation serves health and reflection for them; generation and
 * adapter administration arrive with the mesh (grpc-js answers UNIMPLEMENTED until then).
 */
export function createRouterServices(options: RouterOptions): ServiceInstance {
  options.logger.info("router configured", { provisioner: options.provisionerAddress });
  const [inferenceName, adapterName] = SERVICE_NAMES.router;
  return {
    services: [
      { name: inferenceName, definition: InferenceServiceService, implementation: {} },
      { name: adapterName, definition: AdapterServiceService, implementation: {} },
    ],
    close: async () => undefined,
  };
}
