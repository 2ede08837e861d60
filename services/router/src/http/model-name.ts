/** Which model a request names: the base model's served name, or an adapter of the caller's tenant. */
import { badParam } from "./openai-errors";
import { str, type Body } from "./params";

export interface ModelChoice {
  /** Adapter name for the domain; empty for the base model. */
  adapter: string;
  /** The name echoed back in responses. */
  model: string;
}

/** LoRAX clients name the adapter in `adapter_id`; it stands for `model`. */
export function modelOf(body: Body, servedName: string): ModelChoice {
  const adapterId = str(body, "adapter_id");
  if (adapterId !== undefined && adapterId !== "") return { adapter: adapterId, model: adapterId };
  const model = str(body, "model");
  if (model === undefined || model === "") throw badParam("model", "model is required");
  return { adapter: model === servedName ? "" : model, model };
}
