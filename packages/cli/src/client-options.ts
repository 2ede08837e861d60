import { addressOption, DEFAULT_ROUTER_ADDRESS, stringOption } from "@loramesh/core";

/** Flags every cluster command takes. */
export const clientOptions = {
  router: addressOption({
    flag: "router",
    env: "LORAMESH_ROUTER",
    default: DEFAULT_ROUTER_ADDRESS,
    description: "router address",
  }),
  apiKey: stringOption({
    flag: "api-key",
    env: "LORAMESH_API_KEY",
    default: "",
    description: "API key (identifies the tenant)",
  }),
};

export function connection(config: { router: string; apiKey: string }): { address: string; apiKey?: string } {
  return { address: config.router, ...(config.apiKey !== "" ? { apiKey: config.apiKey } : {}) };
}
