/**
 * The router's view of the base workers: one client per address, one sequence per submit. A worker
 * that dies or stops answering (its connection drops, or keepalive pings go unanswered) surfaces as
 * `WorkerLostError`, which the router answers by resubmitting elsewhere.
 */
import { credentials, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import {
  clusterClientOptions,
  ERROR_CLASS_METADATA_KEY,
  GENERIC_INTERNAL_MESSAGE,
  GRPC_CHANNEL_OPTIONS,
} from "@loramesh/core";
import { DeadlineExceededError, UnavailableError } from "@loramesh/errors";
import { BaseWorkerServiceClient, type SequenceEvent } from "@loramesh/proto";
import type { FinishReason, Sampling, SloClass, TokenDelta, Usage, Timings } from "../domain/types";
import { finishFromProto, samplingToProto, sloToProto } from "../proto-mapping";
import { fromPeer } from "./peer-errors";

export interface WorkerSequence {
  sequenceId: string;
  tenant: string;
  promptTokenIds: number[];
  adapterId: string;
  adapterRank: number;
  sampling: Sampling;
  sloClass: SloClass;
}

/** The worker's last event: why it finished, with its counts and timings. */
export interface WorkerOutcome {
  finishReason: FinishReason;
  usage: Usage | undefined;
  timings: Timings | undefined;
}

/** The worker itself failed (connection lost, no keepalive answer), not the request: another worker may run it. */
export class WorkerLostError extends UnavailableError {
  constructor(
    readonly workerId: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * Keepalive pings on every worker channel: a stopped (SIGSTOP) or unreachable worker does not
 * answer them, so its streams fail within about keepalive time + timeout instead of hanging.
 */
const WORKER_CHANNEL_OPTIONS = {
  ...GRPC_CHANNEL_OPTIONS,
  "grpc.keepalive_time_ms": 2_000,
  "grpc.keepalive_timeout_ms": 4_000,
  "grpc.keepalive_permit_without_calls": 1,
} as const;

export class WorkerGateway {
  private readonly clients = new Map<string, BaseWorkerServiceClient>();

  private client(address: string): BaseWorkerServiceClient {
    let c = this.clients.get(address);
    if (!c) {
      c = new BaseWorkerServiceClient(address, credentials.createInsecure(), {
        ...WORKER_CHANNEL_OPTIONS,
        ...clusterClientOptions(),
      });
      this.clients.set(address, c);
    }
    return c;
  }

  /** Drops the channel to a lost worker, so a worker restarted there is reached without reconnect backoff. */
  private drop(address: string): void {
    this.clients.get(address)?.close();
    this.clients.delete(address);
  }

  /** Runs one sequence on the worker, calling `onDelta` per streamed delta. */
  async submit(
    worker: { executorId: string; address: string },
    seq: WorkerSequence,
    control: { signal?: AbortSignal; deadline?: Date | number; onDelta: (delta: TokenDelta) => void },
  ): Promise<WorkerOutcome> {
    const call = this.client(worker.address).submit(
      {
        ...seq,
        sampling: samplingToProto(seq.sampling),
        sloClass: sloToProto(seq.sloClass),
        arrivalUnixMs: Date.now(),
      },
      new Metadata(),
      control.deadline !== undefined ? { deadline: control.deadline } : {},
    );
    const cancel = (): void => call.cancel();
    if (control.signal?.aborted) cancel();
    control.signal?.addEventListener("abort", cancel);
    try {
      let last: SequenceEvent | undefined;
      for await (const event of call as AsyncIterable<SequenceEvent>) {
        last = event;
        if (finishFromProto(event.finishReason) === undefined)
          control.onDelta({ tokenIds: event.tokenIds, text: event.text, logprobs: event.logprobs });
      }
      if (!last) throw new WorkerLostError(worker.executorId, "the worker ended the stream without a result");
      return {
        finishReason: finishFromProto(last.finishReason) ?? "error",
        usage: last.usage,
        timings: last.timings,
      };
    } catch (err) {
      const e = err as Partial<ServiceError>;
      if (err instanceof WorkerLostError) throw err;
      if (e.code === status.DEADLINE_EXCEEDED)
        throw new DeadlineExceededError("the deadline passed before generation finished");
      if (lost(e, control.signal)) {
        this.drop(worker.address);
        throw new WorkerLostError(worker.executorId, `lost worker ${worker.executorId}: ${e.details ?? e.message}`, {
          cause: err,
        });
      }
      throw fromPeer(err, `worker ${worker.executorId}`);
    } finally {
      control.signal?.removeEventListener("abort", cancel);
    }
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
  }
}

/**
 * A failure of the worker rather than of the request: no domain error class in the trailers (the
 * worker did not answer with one) and not our own cancellation.
 */
function lost(e: Partial<ServiceError>, signal: AbortSignal | undefined): boolean {
  if (signal?.aborted) return false;
  if (e.metadata?.get(ERROR_CLASS_METADATA_KEY).length) return false;
  // The worker's own handler failed (a bug in this request), not the worker.
  if (e.code === status.INTERNAL && e.details === GENERIC_INTERNAL_MESSAGE) return false;
  return (
    e.code === status.UNAVAILABLE ||
    e.code === status.INTERNAL ||
    e.code === status.UNKNOWN ||
    e.code === status.CANCELLED
  );
}
