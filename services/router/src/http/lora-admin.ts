/** vLLM's adapter endpoints: POST /v1/load_lora_adapter and /v1/unload_lora_adapter, with vLLM's shapes. */
import { adapterSourceRef } from "../domain/types";
import type { HttpContext, Route } from "./context";
import { badParam } from "./openai-errors";
import { refuseUnsupported, str, type Body } from "./params";

const required = (body: Body, key: string): string => {
  const v = str(body, key);
  if (v === undefined || v === "") throw badParam(key, `${key} is required`);
  return v;
};

export const loadLoraRoute: Route = {
  method: "POST",
  url: "/v1/load_lora_adapter",
  handler: async (ctx: HttpContext, body, request, reply) => {
    refuseUnsupported(body, ["lora_name", "lora_path", "load_inplace"]);
    const name = required(body, "lora_name");
    // lora_path: a directory on the provisioner's host, or hf://, s3://, http(s)://.
    await ctx.router.loadAdapter(request.tenant, name, adapterSourceRef(required(body, "lora_path")));
    return reply.type("text/plain").send(`Success: LoRA adapter '${name}' added successfully.`);
  },
};

export const unloadLoraRoute: Route = {
  method: "POST",
  url: "/v1/unload_lora_adapter",
  handler: async (ctx: HttpContext, body, request, reply) => {
    refuseUnsupported(body, ["lora_name", "lora_int_id"]);
    const name = required(body, "lora_name");
    await ctx.router.deleteAdapter(request.tenant, name);
    return reply.type("text/plain").send(`Success: LoRA adapter '${name}' removed successfully.`);
  },
};
