/** First import of the process: starts OpenTelemetry before gRPC and ioredis are loaded. */
import { startTelemetry } from "@loramesh/telemetry";

startTelemetry("loramesh-lora-server");
