/** The router's view of the base workers: one client per address, one sequence per submit. */
import { credentials, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { DeadlineExceededError, UnavailableError } from "@loramesh/errors";
import { clusterClientOptions } from "@loramesh/core";
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

export class WorkerGateway {
  private readonly clients = new Map<string, BaseWorkerServiceClient>();

  private client(address: string): BaseWorkerServiceClient {
    let c = this.clients.get(address);
    if (!c) {
      c = new BaseWorkerServiceClient(address, credentials.createInsecure(), clusterClientOptions());
      this.clients.set(address, c);
    }
    return c;
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
      if (!last) throw new UnavailableError("the worker ended the stream without a result");
      return {
        finishReason: finishFromProto(last.finishReason) ?? "error",
        usage: last.usage,
        timings: last.timings,
      };
    } catch (err) {
      const e = err as Partial<ServiceError>;
      if (e.code === status.DEADLINE_EXCEEDED)
        throw new DeadlineExceededError("the deadline passed before generation finished");
      throw fromPeer(err, `worker ${worker.executorId}`);
    } finally {
      control.signal?.removeEventListener("abort", cancel);
    }
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
  }
}
