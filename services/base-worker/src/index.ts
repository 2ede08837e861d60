/** The base worker as a library (benchmarks drive its remote LoRA backend directly). */
export { createBaseWorkerServices, type BaseWorkerOptions, type WorkerMode } from "./base-worker-service";
export { HybridLoraBackend, RemoteLoraBackend, type RemoteLoraOptions } from "./remote-lora-backend";
export { options } from "./options";
