/** Protobuf ↔ domain mapping of the router, both directions, for handlers and peer gateways alike. */
import {
  FinishReason as PbFinishReason,
  SloClass as PbSloClass,
  type Adapter,
  type AdapterSource,
  type GenerateRequest,
  type LoadJobStatus,
  type SamplingParams,
  type Timings as PbTimings,
} from "@loramesh/proto";
import {
  DEFAULT_SAMPLING,
  type AdapterRecord,
  type AdapterSourceRef,
  type AdapterState,
  type FinishReason,
  type GenerationRequest,
  type JobState,
  type LoadJob,
  type Prompt,
  type Sampling,
  type SloClass,
  type Timings,
} from "./domain/types";

const FINISH: Record<PbFinishReason, FinishReason | undefined> = {
  [PbFinishReason.FINISH_REASON_UNSPECIFIED]: undefined,
  [PbFinishReason.FINISH_REASON_EOS]: "eos",
  [PbFinishReason.FINISH_REASON_STOP]: "stop",
  [PbFinishReason.FINISH_REASON_LENGTH]: "length",
  [PbFinishReason.FINISH_REASON_CANCELLED]: "cancelled",
  [PbFinishReason.FINISH_REASON_ERROR]: "error",
  [PbFinishReason.UNRECOGNIZED]: "error",
};
const FINISH_TO_PB: Record<FinishReason, PbFinishReason> = {
  eos: PbFinishReason.FINISH_REASON_EOS,
  stop: PbFinishReason.FINISH_REASON_STOP,
  length: PbFinishReason.FINISH_REASON_LENGTH,
  cancelled: PbFinishReason.FINISH_REASON_CANCELLED,
  error: PbFinishReason.FINISH_REASON_ERROR,
};
const SLO: SloClass[] = ["unspecified", "interactive", "standard", "batch"];
const ADAPTER_STATES: AdapterState[] = ["unspecified", "registered", "loading", "ready", "failed"];
const JOB_STATES: JobState[] = ["unspecified", "waiting", "active", "delayed", "completed", "failed"];

/** The finish reason of a worker event; undefined for an intermediate delta. */
export const finishFromProto = (r: PbFinishReason): FinishReason | undefined => FINISH[r];
export const finishToProto = (r: FinishReason): PbFinishReason => FINISH_TO_PB[r];

export function samplingFromProto(s: SamplingParams | undefined): Sampling {
  if (!s) return { ...DEFAULT_SAMPLING };
  return {
    maxTokens: s.maxTokens,
    temperature: s.temperature,
    topP: s.topP,
    topK: s.topK,
    ...(s.seed !== undefined ? { seed: s.seed } : {}),
    stop: s.stop,
    stopTokenIds: s.stopTokenIds,
    ignoreEos: s.ignoreEos,
    minTokens: s.minTokens ?? 0,
    ...(s.logprobs !== undefined ? { logprobs: s.logprobs } : {}),
  };
}

export function samplingToProto(s: Sampling): SamplingParams {
  return { ...s, seed: s.seed };
}

export function generationFromProto(request: GenerateRequest, requestId: string): GenerationRequest {
  const p = request.prompt;
  let prompt: Prompt | undefined;
  if (p?.$case === "tokenIds") prompt = { kind: "tokens", ids: p.value.ids };
  else if (p?.$case === "text") prompt = { kind: "text", text: p.value, chatTemplate: request.applyChatTemplate };
  return {
    requestId,
    adapter: request.adapter,
    prompt,
    sampling: samplingFromProto(request.sampling),
    sloClass: SLO[request.sloClass] ?? "unspecified",
    ...(request.resumeTokenIds.length > 0 ? { resumeTokenIds: request.resumeTokenIds } : {}),
  };
}

export const sloToProto = (c: SloClass): PbSloClass => SLO.indexOf(c);

export function timingsToProto(t: Timings): PbTimings {
  return { ...t };
}

export function adapterFromProto(a: Adapter): AdapterRecord {
  const source = a.source?.source;
  return {
    name: a.name,
    tenant: a.tenant,
    rank: a.rank,
    alpha: a.alpha,
    targetModules: a.targetModules,
    sizeBytes: a.sizeBytes,
    contentHash: a.contentHash,
    localDir: source?.$case === "localDir" ? source.value : undefined,
    uri: source?.$case === "uri" ? source.value : undefined,
    state: ADAPTER_STATES[a.state] ?? "unspecified",
    error: a.error,
    createdUnixMs: a.createdUnixMs,
    adapterId: a.adapterId,
  };
}

export function adapterToProto(a: AdapterRecord): Adapter {
  return {
    name: a.name,
    tenant: a.tenant,
    rank: a.rank,
    alpha: a.alpha,
    targetModules: a.targetModules,
    sizeBytes: a.sizeBytes,
    contentHash: a.contentHash,
    ...(a.localDir !== undefined ? { source: { source: { $case: "localDir", value: a.localDir } } } : {}),
    ...(a.uri !== undefined ? { source: { source: { $case: "uri", value: a.uri } } } : {}),
    state: Math.max(0, ADAPTER_STATES.indexOf(a.state)),
    error: a.error,
    createdUnixMs: a.createdUnixMs,
    adapterId: a.adapterId,
  };
}

export function loadJobFromProto(j: LoadJobStatus): LoadJob {
  return { ...j, state: JOB_STATES[j.state] ?? "unspecified" };
}

export function loadJobToProto(j: LoadJob): LoadJobStatus {
  return { ...j, state: Math.max(0, JOB_STATES.indexOf(j.state)) };
}

/** A domain source reference as the protocol's AdapterSource. */
export function sourceToProto(source: AdapterSourceRef): AdapterSource {
  return "uri" in source
    ? { source: { $case: "uri", value: source.uri } }
    : { source: { $case: "localDir", value: source.localDir } };
}
