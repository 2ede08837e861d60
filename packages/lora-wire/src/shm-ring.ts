/**
 * Same-host LoRA sites through shared-memory rings (native/src/shm_*.cpp) instead of the Execute
 * stream. The LoRA server owns a `RingServer`: a native thread that waits on every attached
 * worker's doorbell, batches the sites they posted and computes them on the adapter pool, with no
 * JavaScript per site. A worker asks for a ring with the `AttachSharedMemory` RPC; the server
 * creates the segment under a name it generates and the worker maps it (`ShmRing`).
 */
import { Metadata } from "@grpc/grpc-js";
import { fromServiceError } from "@loramesh/core";
import { FailedPreconditionError, UnavailableError } from "@loramesh/errors";
import { siteShape, type LoraSite, type ModelConfig } from "@loramesh/formats";
import {
  native,
  type RingServerStats,
  type RingSiteTable,
  type RingServerHandle,
  type SiteBackendHandle,
} from "@loramesh/native";
import type { LoraServerServiceClient } from "@loramesh/proto";
import type { SiteWork } from "./messages";

/** Site ids of the native rings (lm::SiteId). */
export const RING_SITE_IDS: Record<LoraSite, number> = { qkv: 0, o: 1, gate_up: 2, down: 3 };
const SITES: readonly LoraSite[] = ["qkv", "o", "gate_up", "down"];

/** Default segment of one worker: 32 MiB over its four slots. */
export const DEFAULT_RING_BYTES = 32 * 1024 * 1024;

export interface RingServerOptions {
  model: ModelConfig;
  /** This server's host id: only workers on the same host get a ring. */
  hostId: string;
  segmentBytes?: number;
  /** Longest a posted site waits for other workers' posts of the same site. */
  windowMs?: number;
  /** A worker that leaves a delta unread (or never maps its segment) this long is detached. */
  siteTimeoutMs?: number;
}

/** The LoRA server's side of the rings. */
export class RingServer {
  private readonly handle: RingServerHandle;

  constructor(private readonly options: RingServerOptions) {
    const { model } = options;
    const shapes = SITES.map((s) => siteShape(model, s));
    this.handle = native.shmServerStart({
      numLayers: model.numLayers,
      numExperts: model.numExperts,
      hIn: shapes.map((s) => s.hIn),
      nOut: shapes.map((s) => s.nOut),
      segmentBytes: options.segmentBytes ?? DEFAULT_RING_BYTES,
      windowUs: Math.round((options.windowMs ?? 2) * 1000),
      activeUs: 100_000,
      siteTimeoutMs: options.siteTimeoutMs ?? 10_000,
      attachTimeoutMs: options.siteTimeoutMs ?? 10_000,
    });
  }

  /** Creates a ring for a worker on this host; returns the segment's generated name. */
  attach(workerId: string, hostId: string): { name: string; bytes: number } {
    if (hostId !== this.options.hostId)
      throw new FailedPreconditionError("shared memory is only for workers on the LoRA server's host");
    return native.shmServerAttach(this.handle, workerId);
  }

  /** Replaces the adapters the ring thread computes with (call on every pool change). */
  setTables(slots: readonly string[], sites: readonly RingSiteTable[]): void {
    native.shmServerSetTables(this.handle, slots, sites);
  }

  stats(): RingServerStats {
    return native.shmServerStats(this.handle);
  }

  /** Detaches every worker (their sites fail with UNAVAILABLE) and removes the segments. */
  stop(): void {
    native.shmServerStop(this.handle);
  }
}

/** The worker's side of one ring. */
export class ShmRing {
  private closed = false;
  /** Lets go of the segment of a server that died between sites (off the per-site path). */
  private readonly watch: NodeJS.Timeout;

  private constructor(
    /** The segment's name (already unlinked: both sides have it mapped). */
    readonly name: string,
    /** What the native step takes (`Napi::External<std::shared_ptr<lm::SiteBackend>>`). */
    readonly backend: SiteBackendHandle,
    private readonly timeoutMs: number,
  ) {
    this.watch = setInterval(() => {
      if (!native.shmCheck(this.backend)) this.close();
    }, 500).unref();
  }

  /** Asks the LoRA server for a ring and maps it. */
  static async attach(
    client: LoraServerServiceClient,
    request: { workerId: string; hostId: string },
    timeoutMs: number,
  ): Promise<ShmRing> {
    const reply = await new Promise<{ name: string }>((resolve, reject) =>
      client.attachSharedMemory(request, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) =>
        err ? reject(fromServiceError(err, { peer: "the LoRA server" })) : resolve(res),
      ),
    );
    return new ShmRing(reply.name, native.shmConnect(reply.name), timeoutMs);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Whether a site of this size fits one slot (bigger ones go through the stream). */
  fits(work: Pick<SiteWork, "rows" | "hIn" | "nOut">): boolean {
    return !this.closed && native.shmFits(this.backend, work.rows, work.hIn, work.nOut);
  }

  /**
   * Runs one site; resolves with its delta [rows, nOut]. A dead, detached or silent server rejects
   * with an UnavailableError (the ring is then closed), an adapter it does not hold with NotFoundError.
   */
  async request(work: SiteWork): Promise<Float32Array> {
    try {
      return await native.shmSite(this.backend, {
        layer: work.layer,
        site: RING_SITE_IDS[work.site],
        adapterIds: work.adapterIds,
        rowAdapter: Int32Array.from(work.rowAdapter),
        ...(work.rowExpert.length > 0 ? { rowExpert: Int32Array.from(work.rowExpert) } : {}),
        x: work.x,
        rows: work.rows,
        hIn: work.hIn,
        nOut: work.nOut,
        timeoutMs: this.timeoutMs,
      });
    } catch (err) {
      if (err instanceof UnavailableError) this.close();
      throw err;
    }
  }

  /** Tells the server this worker leaves; the mapping goes with the handle. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.watch);
    native.shmClose(this.backend);
  }
}

/** Removes ring segments left by processes that died (SIGKILL); returns how many. */
export function reapRingSegments(): number {
  return native.shmReap();
}
