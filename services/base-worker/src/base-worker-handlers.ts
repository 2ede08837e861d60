/** The BaseWorker gRPC handlers: proto ↔ domain mapping around `WorkerSequences`, nothing more. */
import type { ServerWritableStream } from "@grpc/grpc-js";
import { serverStreamHandler, unaryHandler, type Logger } from "@loramesh/core";
import { DeadlineExceededError } from "@loramesh/errors";
import type { SequenceRequest, SequenceResult } from "@loramesh/engine";
import {
  FinishReason,
  type BaseWorkerServiceServer,
  type SequenceEvent,
  type SubmitSequenceRequest,
} from "@loramesh/proto";
import type { WorkerMode } from "./backends/worker-backends";
import type { WorkerSequences } from "./worker-sequences";

const FINISH: Record<SequenceResult["finishReason"], FinishReason> = {
  eos: FinishReason.FINISH_REASON_EOS,
  stop: FinishReason.FINISH_REASON_STOP,
  length: FinishReason.FINISH_REASON_LENGTH,
  cancelled: FinishReason.FINISH_REASON_CANCELLED,
};

export function createBaseWorkerHandlers(
  sequences: WorkerSequences,
  mode: WorkerMode,
  logger: Logger,
): BaseWorkerServiceServer {
  return {
    submit: serverStreamHandler(logger, (request, call) => submit(sequences, request, call)),
    cancel: unaryHandler(logger, async (request) => ({ wasRunning: sequences.cancel(request.sequenceId) })),
    getStats: unaryHandler(logger, async () => {
      const st = sequences.stats();
      return {
        runningSequences: st.running,
        waitingSequences: st.waiting,
        kvBlocksUsed: st.kvBlocksUsed,
        kvBlocksTotal: st.kvBlocksTotal,
        steps: st.steps,
        generatedTokens: st.generatedTokens,
        finishedSequences: st.finished,
        cancelledSequences: st.cancelled,
        loraMode: mode,
      };
    }),
  };
}

type SubmitCall = ServerWritableStream<SubmitSequenceRequest, SequenceEvent>;

async function submit(sequences: WorkerSequences, request: SubmitSequenceRequest, call: SubmitCall): Promise<void> {
  const result = await sequences.run(
    toSequenceRequest(request),
    (sequenceId, update) => {
      if (!call.cancelled)
        call.write({
          sequenceId,
          tokenIds: update.tokenIds,
          finishReason: 0,
          text: update.text,
          logprobs: update.logprobs ?? [],
        });
    },
    // Client cancellation and deadlines both end the call; the sequence (and its cache) go too.
    {
      onCancel: (cancel) => {
        call.on("cancelled", cancel);
        return () => call.off("cancelled", cancel);
      },
    },
  );
  if (call.cancelled) {
    const deadline = call.getDeadline();
    const passed = deadline instanceof Date ? deadline.getTime() <= Date.now() : Number(deadline) <= Date.now();
    if (passed) throw new DeadlineExceededError("the deadline passed before generation finished");
    return;
  }
  call.write(finalEvent(result));
}

function toSequenceRequest(request: SubmitSequenceRequest): SequenceRequest {
  const s = request.sampling;
  return {
    id: request.sequenceId,
    promptIds: request.promptTokenIds,
    ...(request.adapterId !== "" ? { adapterId: request.adapterId } : {}),
    sampling: {
      maxTokens: s?.maxTokens ?? 0,
      temperature: s?.temperature ?? 0,
      topP: s?.topP ?? 0,
      topK: s?.topK ?? 0,
      seed: s?.seed,
      stop: s?.stop ?? [],
      stopTokenIds: s?.stopTokenIds ?? [],
      ignoreEos: s?.ignoreEos ?? false,
      minTokens: s?.minTokens ?? 0,
      logprobs: s?.logprobs,
    },
  };
}

function finalEvent(result: SequenceResult): SequenceEvent {
  return {
    sequenceId: result.id,
    tokenIds: [],
    text: "",
    logprobs: [],
    finishReason: FINISH[result.finishReason],
    usage: { promptTokens: result.promptTokens, completionTokens: result.tokenIds.length },
    timings: {
      queueMs: result.timings.queueMs,
      timeToFirstTokenMs: result.timings.timeToFirstTokenMs,
      timePerOutputTokenMs: result.timings.timePerOutputTokenMs,
      totalMs: result.timings.totalMs,
    },
  };
}
