/**
 * The worker's sequences: submission into the engine's continuous batch, token updates while they
 * decode, cancellation, and the per-adapter request counts heartbeats report. No protobuf here; the
 * gRPC handlers map to and from these types.
 */
import { randomUUID } from "node:crypto";
import type { Engine, EngineStats, SequenceRequest, SequenceResult, SequenceUpdate } from "@loramesh/engine";
import type { WorkerTelemetry } from "./worker-telemetry";

export interface WorkerSequencesOptions {
  engine: Engine;
  telemetry: WorkerTelemetry;
}

/** How a caller ends a sequence early (client cancellation or an expired deadline). */
export interface SequenceCancellation {
  onCancel(cancel: () => void): () => void;
}

export class WorkerSequences {
  private readonly engine: Engine;
  private readonly tel: WorkerTelemetry;
  private readonly requests: Record<string, number> = {};

  constructor(options: WorkerSequencesOptions) {
    this.engine = options.engine;
    this.tel = options.telemetry;
  }

  /**
   * Runs a sequence to its end, calling `onUpdate` with each batch of new tokens. Cancelling frees
   * its KV blocks; the result then has finishReason "cancelled".
   */
  async run(
    request: SequenceRequest,
    onUpdate: (sequenceId: string, update: SequenceUpdate) => void,
    cancellation: SequenceCancellation,
  ): Promise<SequenceResult> {
    // Register the request's trace context before the engine can schedule the sequence.
    const sequenceId = request.id || randomUUID();
    const key = request.adapterId ?? "";
    this.tel.begin(sequenceId, key);
    let generated = 0;
    try {
      const handle = this.engine.submit({ ...request, id: sequenceId }, (u) => onUpdate(sequenceId, u));
      this.requests[key] = (this.requests[key] ?? 0) + 1;
      const stopListening = cancellation.onCancel(() => handle.cancel());
      try {
        const result = await handle.result;
        generated = result.tokenIds.length;
        return result;
      } finally {
        stopListening();
      }
    } finally {
      this.tel.end(sequenceId, key, generated);
    }
  }

  cancel(sequenceId: string): boolean {
    return this.engine.cancel(sequenceId);
  }

  stats(): EngineStats {
    return this.engine.stats();
  }

  /** Requests per adapter since the last call (heartbeats report them as traffic). */
  takeRequestCounts(): Record<string, number> {
    const out = { ...this.requests };
    for (const k of Object.keys(this.requests)) delete this.requests[k];
    return out;
  }
}
