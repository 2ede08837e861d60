/** The base worker as a library (benchmarks drive its remote LoRA backend directly). */
export { createBaseWorkerServices, type BaseWorkerOptions, type WorkerMode } from "./base-worker-service";
export { HybridLoraBackend } from "./backends/hybrid-lora-backend";
export { RemoteLoraBackend, type RemoteLoraOptions } from "./backends/remote-lora-backend";
export {
  LORA_TRANSPORTS,
  transportFor,
  transportPolicy,
  type LoraTransportChoice,
  type TransportPolicy,
} from "./backends/lora-transport";
export { options } from "./options";
export { SERIES_MAX, type StepProfileFile, type StepSample } from "./step-profile";
