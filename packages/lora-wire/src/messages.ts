/**
 * Work and reply messages of the Execute stream, to and from plain values. Activations and deltas
 * go inline as tensors, or through the stream's shared region when there is one and they fit.
 * Nothing outside this package builds or reads a `LoraStreamRequest` or `LoraResult`.
 */
import { InvalidArgumentError, UnavailableError } from "@loramesh/errors";
import type { LoraSite } from "@loramesh/formats";
import { DType, type LoraResult, type LoraStreamOpen, type LoraStreamRequest, type LoraWork } from "@loramesh/proto";
import { errorOfReply, replyErrorOf } from "./reply-errors";
import type { SharedRegion } from "./shared-region";
import { siteFromProto, siteToProto } from "./sites";
import { decodeTensor, encodeTensor } from "./tensor-codec";

export type WireTransport = "shm" | "grpc";

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
  /** Where the delta goes in the shared region (shm transport). */
  resultOffset: number;
}

/** The stream's first message. */
export interface StreamOpen {
  workerId: string;
  hostId: string;
  region?: { path: string; bytes: number };
}

export function encodeOpen(open: StreamOpen): LoraStreamRequest {
  return {
    kind: {
      $case: "open",
      value: {
        workerId: open.workerId,
        hostId: open.hostId,
        sharedMemoryName: open.region?.path ?? "",
        sharedMemoryBytes: open.region?.bytes ?? 0,
      },
    },
  };
}

export function decodeOpen(open: LoraStreamOpen): StreamOpen {
  return {
    workerId: open.workerId,
    hostId: open.hostId,
    ...(open.sharedMemoryName !== "" ? { region: { path: open.sharedMemoryName, bytes: open.sharedMemoryBytes } } : {}),
  };
}

/** Worker side: the work message; with a region that fits, the activations are written into it. */
export function encodeWork(stepId: number, work: SiteWork, region?: SharedRegion): LoraStreamRequest {
  const useShm = region !== undefined && region.fits(work.x.byteLength, work.rows * work.nOut * 4);
  const shape = [work.rows, work.hIn];
  if (useShm) region.write(0, work.x);
  const value: LoraWork = {
    stepId,
    layer: work.layer,
    site: siteToProto(work.site),
    adapterIds: [...work.adapterIds],
    rowAdapter: [...work.rowAdapter],
    rowExpert: [...work.rowExpert],
    rowWeight: [...(work.rowWeight ?? [])],
    activations: useShm
      ? { $case: "shared", value: { offset: 0, dtype: DType.DTYPE_F32, shape } }
      : { $case: "inline", value: encodeTensor({ dtype: DType.DTYPE_F32, shape, data: work.x }) },
    resultOffset: useShm ? region.resultOffset : 0,
    traceparent: work.traceparent ?? "",
    tracestate: work.tracestate ?? "",
  };
  return { kind: { $case: "work", value } };
}

/**
 * Server side: validates a work message against the site's input width (`hInOf`) and copies its
 * activations out. Anything malformed is INVALID_ARGUMENT.
 */
export function decodeWork(
  work: LoraWork,
  region: SharedRegion | undefined,
  hInOf: (site: LoraSite) => number,
): ReceivedWork {
  const site = siteFromProto(work.site);
  const hIn = hInOf(site);
  const { x, rows } = decodeActivations(work, region, hIn);
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
    transport: work.activations?.$case === "shared" ? "shm" : "grpc",
    resultOffset: work.resultOffset,
    traceparent: work.traceparent,
    tracestate: work.tracestate,
  };
}

function decodeActivations(
  work: LoraWork,
  region: SharedRegion | undefined,
  hIn: number,
): { x: Float32Array; rows: number } {
  const act = work.activations;
  if (act?.$case === "inline") {
    const t = decodeTensor(act.value);
    if (t.dtype !== DType.DTYPE_F32 || t.shape.length !== 2 || t.shape[1] !== hIn)
      throw new InvalidArgumentError(`activations must be f32 [rows, ${hIn}]`);
    return { x: t.data, rows: t.shape[0] as number };
  }
  if (act?.$case === "shared") {
    if (!region) throw new InvalidArgumentError("shared-memory activations on a stream without a shared region");
    const s = act.value;
    const rows = s.shape[0] ?? 0;
    if (s.dtype !== DType.DTYPE_F32 || s.shape.length !== 2 || s.shape[1] !== hIn)
      throw new InvalidArgumentError("shared-memory activations out of bounds or of the wrong shape");
    return { x: region.read(s.offset, rows * hIn), rows };
  }
  throw new InvalidArgumentError("work has no activations");
}

/** Server side: the reply carrying a delta [rows, nOut], through the region when the work came that way. */
export function encodeReply(work: ReceivedWork, delta: Float32Array, nOut: number, region?: SharedRegion): LoraResult {
  const base = { stepId: work.stepId, layer: work.layer, site: siteToProto(work.site), error: "", errorCode: 0 };
  const shape = [work.rows, nOut];
  if (work.transport === "shm" && region) {
    region.write(work.resultOffset, delta);
    return { ...base, delta: { $case: "shared", value: { offset: work.resultOffset, dtype: DType.DTYPE_F32, shape } } };
  }
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
  region?: SharedRegion,
): Float32Array {
  if (reply.error !== "") throw errorOfReply(reply, serverId);
  const count = expected.rows * expected.nOut;
  const delta = reply.delta;
  if (delta?.$case === "shared" && region) {
    try {
      return region.read(delta.value.offset, count);
    } catch (err) {
      throw new UnavailableError(
        `LoRA server ${serverId} returned a delta outside the region: ${(err as Error).message}`,
      );
    }
  }
  if (delta?.$case === "inline") {
    const t = decodeTensor(delta.value);
    if (t.dtype !== DType.DTYPE_F32 || t.data.length !== count)
      throw new UnavailableError("LoRA server returned a delta of the wrong shape");
    return t.data;
  }
  throw new UnavailableError("LoRA server returned no delta");
}
