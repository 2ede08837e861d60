/**
 * Work and reply messages of the Execute stream, to and from plain values. Activations and deltas
 * go inline as tensors (same-host sites go through the shared-memory rings, `shm-ring.ts`, not the
 * stream). Nothing outside this package builds or reads a `LoraStreamRequest` or `LoraResult`.
 */
import { InvalidArgumentError, UnavailableError } from "@loramesh/errors";
import type { LoraSite } from "@loramesh/formats";
import { DType, type LoraResult, type LoraStreamOpen, type LoraStreamRequest, type LoraWork } from "@loramesh/proto";
import { errorOfReply, replyErrorOf } from "./reply-errors";
import { siteFromProto, siteToProto } from "./sites";
import { decodeTensor, encodeTensor } from "./tensor-codec";

export type WireTransport = "shm" | "ucx" | "grpc";

/** One site of one step, as the worker sends it. */
export interface SiteWork {
  layer: number;
  site: LoraSite;
  /** Distinct adapter ids; rows refer to them by index. */
  adapterIds: readonly string[];
  /** Per row: index into `adapterIds`, or −1 for none. */
  rowAdapter: readonly number[];
  /** MoE: per-row expert; empty for dense sites. */
  rowExpert: readonly number[];
  /** MoE down site: per-row routing weight; empty otherwise. */
  rowWeight?: readonly number[];
  /** Activations [rows, hIn]. */
  x: Float32Array;
  rows: number;
  hIn: number;
  /** Width of the expected delta. */
  nOut: number;
  traceparent?: string;
  tracestate?: string;
}

/** One site of one step, as the server received it (activations copied out of the wire). */
export interface ReceivedWork extends Required<Omit<SiteWork, "nOut" | "adapterIds" | "rowAdapter" | "rowExpert">> {
  stepId: number;
  adapterIds: string[];
  rowAdapter: number[];
  rowExpert: number[];
  transport: WireTransport;
}

/** The stream's first message. */
export interface StreamOpen {
  workerId: string;
  hostId: string;
}

export function encodeOpen(open: StreamOpen): LoraStreamRequest {
  return { kind: { $case: "open", value: { workerId: open.workerId, hostId: open.hostId } } };
}

export function decodeOpen(open: LoraStreamOpen): StreamOpen {
  return { workerId: open.workerId, hostId: open.hostId };
}

/** Worker side: the work message, activations inline. */
export function encodeWork(stepId: number, work: SiteWork): LoraStreamRequest {
  const shape = [work.rows, work.hIn];
  const value: LoraWork = {
    stepId,
    layer: work.layer,
    site: siteToProto(work.site),
    adapterIds: [...work.adapterIds],
    rowAdapter: [...work.rowAdapter],
    rowExpert: [...work.rowExpert],
    rowWeight: [...(work.rowWeight ?? [])],
    activations: { $case: "inline", value: encodeTensor({ dtype: DType.DTYPE_F32, shape, data: work.x }) },
    resultOffset: 0,
    traceparent: work.traceparent ?? "",
    tracestate: work.tracestate ?? "",
  };
  return { kind: { $case: "work", value } };
}

/**
 * Server side: validates a work message against the site's input width (`hInOf`) and copies its
 * activations out. Anything malformed is INVALID_ARGUMENT.
 */
export function decodeWork(work: LoraWork, hInOf: (site: LoraSite) => number): ReceivedWork {
  const site = siteFromProto(work.site);
  const hIn = hInOf(site);
  const { x, rows } = decodeActivations(work, hIn);
  if (work.rowAdapter.length !== rows)
    throw new InvalidArgumentError(`row_adapter has ${work.rowAdapter.length} entries for ${rows} rows`);
  for (const i of work.rowAdapter)
    if (i >= work.adapterIds.length) throw new InvalidArgumentError(`row_adapter index ${i} is outside adapter_ids`);
  if (work.rowExpert.length !== 0 && work.rowExpert.length !== rows)
    throw new InvalidArgumentError("row_expert must have one entry per row on an MoE model");
  return {
    stepId: work.stepId,
    layer: work.layer,
    site,
    adapterIds: work.adapterIds,
    rowAdapter: work.rowAdapter,
    rowExpert: work.rowExpert,
    rowWeight: work.rowWeight,
    x,
    rows,
    hIn,
    transport: "grpc",
    traceparent: work.traceparent,
    tracestate: work.tracestate,
  };
}

function decodeActivations(work: LoraWork, hIn: number): { x: Float32Array; rows: number } {
  const act = work.activations;
  if (act?.$case === "inline") {
    const t = decodeTensor(act.value);
    if (t.dtype !== DType.DTYPE_F32 || t.shape.length !== 2 || t.shape[1] !== hIn)
      throw new InvalidArgumentError(`activations must be f32 [rows, ${hIn}]`);
    return { x: t.data, rows: t.shape[0] as number };
  }
  if (act?.$case === "shared")
    throw new InvalidArgumentError(
      "shared-memory slices are not accepted on the stream; same-host sites use the rings",
    );
  throw new InvalidArgumentError("work has no activations");
}

/** Server side: the reply carrying a delta [rows, nOut]. */
export function encodeReply(work: ReceivedWork, delta: Float32Array, nOut: number): LoraResult {
  const base = { stepId: work.stepId, layer: work.layer, site: siteToProto(work.site), error: "", errorCode: 0 };
  const shape = [work.rows, nOut];
  return { ...base, delta: { $case: "inline", value: encodeTensor({ dtype: DType.DTYPE_F32, shape, data: delta }) } };
}

/** Server side: the reply for a work item that failed (the stream itself stays open). */
export function encodeErrorReply(work: Pick<LoraWork, "stepId" | "layer" | "site">, err: unknown): LoraResult {
  return { stepId: work.stepId, layer: work.layer, site: work.site, ...replyErrorOf(err) };
}

/**
 * Worker side: the delta of a reply, checked against what was asked ([rows, nOut]). An error reply
 * throws its typed error; a malformed one is UNAVAILABLE (the server is not serving correctly).
 */
export function decodeReply(
  reply: LoraResult,
  expected: { rows: number; nOut: number },
  serverId: string,
): Float32Array {
  if (reply.error !== "") throw errorOfReply(reply, serverId);
  const count = expected.rows * expected.nOut;
  const delta = reply.delta;
  if (delta?.$case === "inline") {
    const t = decodeTensor(delta.value);
    if (t.dtype !== DType.DTYPE_F32 || t.data.length !== count)
      throw new UnavailableError("LoRA server returned a delta of the wrong shape");
    return t.data;
  }
  throw new UnavailableError("LoRA server returned no delta");
}
