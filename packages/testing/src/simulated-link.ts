/**
 * A WAN link in front of a test server on 127.0.0.1: every request waits `latencyMs` before it is
 * handled (one round trip to a remote store), and response bodies share one link of
 * `bytesPerSecond`, sent in 64 KiB slices at the times the link would have carried them. Benchmarks
 * use it so that "fetch from the source" models a remote hub or bucket instead of loopback.
 */
import type { ServerResponse } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";

export interface LinkOptions {
  /** Body bytes per second over all responses together; 0 or absent: unlimited. */
  bytesPerSecond?: number;
  /** Delay before each request is handled, in milliseconds; 0 or absent: none. */
  latencyMs?: number;
}

const SLICE_BYTES = 64 * 1024;

/** Resolves when the response can take more bytes, or has closed; leaves no listener behind. */
function drained(res: ServerResponse): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = (): void => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}

export class SimulatedLink {
  /** When (performance.now() ms) the link is next free. */
  private freeAt = 0;

  constructor(private readonly options: LinkOptions = {}) {}

  get limited(): boolean {
    return (this.options.bytesPerSecond ?? 0) > 0 || (this.options.latencyMs ?? 0) > 0;
  }

  /** Resolves after the link's latency. */
  async delay(): Promise<void> {
    const ms = this.options.latencyMs ?? 0;
    if (ms > 0) await sleep(ms);
  }

  /** Writes `bytes` (or its first `limit` bytes) to `res` at the link's rate; does not end it. */
  async write(res: ServerResponse, bytes: Buffer, limit = bytes.length): Promise<void> {
    const rate = this.options.bytesPerSecond ?? 0;
    for (let at = 0; at < limit && !res.destroyed; at += SLICE_BYTES) {
      const slice = bytes.subarray(at, Math.min(limit, at + SLICE_BYTES));
      if (rate > 0) {
        // Reserve the slice's time on the shared link, then send it when the link has carried it.
        const start = Math.max(performance.now(), this.freeAt);
        this.freeAt = start + (slice.length / rate) * 1000;
        const wait = this.freeAt - performance.now();
        if (wait > 0) await sleep(wait);
      }
      if (!res.write(slice) && !res.destroyed) await drained(res);
    }
  }
}
