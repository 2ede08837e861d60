/** @loramesh/engine: Hugging Face checkpoints and PEFT adapters on the native core. */
export * from "./adapter";
export * from "./checkpoint";
export * from "./engine";
export * from "./forward";
export * from "./kv-cache";
export * from "./local-lora-backend";
export * from "./lora-backend";
export * from "./model";
export * from "./model-config";
export * from "./safetensors";
export * from "./sampling";
export * from "./tokenizer";
export * from "./weights";
