/** Options of the router process: flags and the environment variables that set them. */
import { addressOption, DEFAULT_ROUTER_ADDRESS, intOption, numberOption, stringOption } from "@loramesh/core";

export const options = {
  listen: addressOption({
    flag: "listen",
    env: "LISTEN_ADDRESS",
    default: DEFAULT_ROUTER_ADDRESS,
    description: "address to serve the public API on",
  }),
  httpListen: addressOption({
    flag: "http-listen",
    env: "HTTP_LISTEN_ADDRESS",
    default: "127.0.0.1:8000",
    description: "address of the OpenAI-compatible HTTP API (port 0: any free port)",
  }),
  servedModelName: stringOption({
    flag: "served-model-name",
    env: "SERVED_MODEL_NAME",
    default: "",
    description: "the base model's name in the HTTP API's `model` field (default: the model directory's name)",
  }),
  provisioner: addressOption({
    flag: "provisioner",
    env: "PROVISIONER_ADDRESS",
    description: "provisioner gRPC address",
  }),
  model: stringOption({
    flag: "model",
    env: "LORAMESH_MODEL",
    description: "base model directory (the router tokenizes with its tokenizer.json)",
  }),
  apiKeys: stringOption({
    flag: "api-keys",
    secret: true,
    env: "LORAMESH_API_KEYS",
    default: "",
    description: "key=tenant pairs, comma-separated; empty: open, one default tenant",
  }),
  sloTtftMs: intOption({
    flag: "slo-ttft-ms",
    env: "SLO_TTFT_MS",
    default: 2_000,
    min: 1,
    description: "time-to-first-token target counted by the SLO metric and used by admission",
  }),
  sloTpotMs: intOption({
    flag: "slo-tpot-ms",
    env: "SLO_TPOT_MS",
    default: 200,
    min: 1,
    description: "time-per-output-token target counted by the SLO metric",
  }),
  adapterWaitMs: intOption({
    flag: "adapter-wait-ms",
    env: "ADAPTER_WAIT_MS",
    default: 5_000,
    min: 0,
    description: "how long a request waits for a cold adapter to load",
  }),
  maxInFlight: intOption({
    flag: "max-in-flight",
    env: "MAX_IN_FLIGHT",
    default: 0,
    min: 0,
    description:
      "most requests in flight on this router; more wait in the admission queue or are refused (RESOURCE_EXHAUSTED, HTTP 429); 0: no limit",
  }),
  tenantMaxInFlight: intOption({
    flag: "tenant-max-in-flight",
    env: "TENANT_MAX_IN_FLIGHT",
    default: 0,
    min: 0,
    description: "most requests in flight per tenant; more wait in the admission queue or are refused; 0: no limit",
  }),
  maxQueued: intOption({
    flag: "max-queued",
    env: "MAX_QUEUED",
    default: 0,
    min: 0,
    description: "requests that may wait for an in-flight slot (FIFO); more are refused at once; 0: none wait",
  }),
  admissionSloFactor: numberOption({
    flag: "admission-slo-factor",
    env: "ADMISSION_SLO_FACTOR",
    default: 1,
    min: 0,
    description:
      "refuse a request that would queue when its predicted TTFT exceeds this × --slo-ttft-ms (batch-class requests excepted); 0: off",
  }),
  routingSlack: intOption({
    flag: "routing-slack",
    env: "ROUTING_SLACK",
    default: 1,
    min: 0,
    description: "extra in-flight requests a worker may have and still win on rank grouping",
  }),
};
