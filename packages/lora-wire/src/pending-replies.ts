/**
 * Matches replies to requests on one stream. Each request waits under its step id; a reply must
 * carry the step id, layer and site of a waiting request, or the stream is broken (the server and
 * worker no longer agree on what is in flight). Every wait has a timeout, so a silent peer never
 * hangs a step.
 */
import { UnavailableError } from "@loramesh/errors";
import type { LoraResult, LoraSite } from "@loramesh/proto";

interface Waiter {
  layer: number;
  site: LoraSite;
  resolve: (reply: LoraResult) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class PendingReplies {
  private readonly waiting = new Map<number, Waiter>();

  constructor(
    private readonly options: {
      timeoutMs: number;
      /** Names the peer in errors. */
      peer: string;
      /** Called when a wait times out (the caller resets the stream). */
      onTimeout: (err: UnavailableError) => void;
    },
  ) {}

  get size(): number {
    return this.waiting.size;
  }

  /** Resolves with the reply to `stepId`; rejects on timeout or when the stream fails. */
  expect(stepId: number, layer: number, site: LoraSite): Promise<LoraResult> {
    if (this.waiting.has(stepId)) throw new UnavailableError(`step ${stepId} is already waiting for a reply`);
    return new Promise<LoraResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        const err = new UnavailableError(
          `LoRA server ${this.options.peer} did not answer within ${this.options.timeoutMs} ms`,
        );
        this.waiting.delete(stepId);
        reject(err);
        this.options.onTimeout(err);
      }, this.options.timeoutMs);
      this.waiting.set(stepId, { layer, site, resolve, reject, timer });
    });
  }

  /** Hands a reply to its request; false when it matches none (the caller treats the stream as broken). */
  settle(reply: LoraResult): boolean {
    const waiter = this.waiting.get(reply.stepId);
    if (!waiter || waiter.layer !== reply.layer || waiter.site !== reply.site) return false;
    this.waiting.delete(reply.stepId);
    clearTimeout(waiter.timer);
    waiter.resolve(reply);
    return true;
  }

  /** Fails everything in flight. */
  failAll(err: Error): void {
    const waiters = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of waiters) {
      clearTimeout(w.timer);
      w.reject(err);
    }
  }
}
