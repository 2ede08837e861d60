import { startGrpcServer, type RunningGrpcServer, type ServiceRegistration } from "@loramesh/core";
import { captureLogger, type CapturedLogger } from "./logger";

export interface TestGrpcServer extends RunningGrpcServer {
  /** Log lines the server and its handlers wrote. */
  logs: CapturedLogger;
}

/** A real grpc-js server on 127.0.0.1 with a free port, serving `services` plus health and reflection. */
export async function startTestGrpcServer(services: readonly ServiceRegistration[]): Promise<TestGrpcServer> {
  const logs = captureLogger();
  const server = await startGrpcServer({ address: "127.0.0.1:0", services, logger: logs });
  server.setServing(true);
  return Object.assign(server, { logs });
}
