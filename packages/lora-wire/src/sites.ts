/** LoRA site ids both ways: the proto enum on the wire, the engine's `LoraSite` everywhere else. */
import { InvalidArgumentError } from "@loramesh/errors";
import type { LoraSite } from "@loramesh/formats";
import { LoraSite as ProtoSite } from "@loramesh/proto";

const TO_PROTO: Record<LoraSite, ProtoSite> = {
  qkv: ProtoSite.LORA_SITE_QKV,
  o: ProtoSite.LORA_SITE_O,
  gate_up: ProtoSite.LORA_SITE_GATE_UP,
  down: ProtoSite.LORA_SITE_DOWN,
};

const FROM_PROTO: Partial<Record<ProtoSite, LoraSite>> = Object.fromEntries(
  Object.entries(TO_PROTO).map(([site, proto]) => [proto, site as LoraSite]),
);

export function siteToProto(site: LoraSite): ProtoSite {
  return TO_PROTO[site];
}

/** The engine site of a wire value; UNSPECIFIED or an unknown number is INVALID_ARGUMENT. */
export function siteFromProto(site: ProtoSite): LoraSite {
  const out = FROM_PROTO[site];
  if (out === undefined) throw new InvalidArgumentError(`unknown LoRA site ${site}`);
  return out;
}
