/**
 * LoRA sites between hosts over UCX (native/src/ucx_*.cpp) instead of the Execute stream. The LoRA
 * server owns a `UcxServer`: a native thread with a UCP worker and a listener on the server's
 * advertised host, which batches every connected worker's sites and computes them on the adapter
 * pool with no JavaScript per site. A worker asks for the listener's address and a session key with
 * the `AttachUcx` RPC (cluster-token checked like every internal RPC) and connects (`UcxChannel`).
 * UCX picks the wire: TCP here, RDMA verbs where the hardware exists (docs/rdma.md).
 */
import { Metadata } from "@grpc/grpc-js";
import { fromServiceError } from "@loramesh/core";
import { FailedPreconditionError, UnavailableError } from "@loramesh/errors";
import { siteShape, type LoraSite, type ModelConfig } from "@loramesh/formats";
import {
  native,
  type RingSiteTable,
  type SiteBackendHandle,
  type UcxAttachment,
  type UcxServerHandle,
  type UcxServerStats,
} from "@loramesh/native";
import type { LoraServerServiceClient } from "@loramesh/proto";
import type { SiteWork } from "./messages";
import { RING_SITE_IDS } from "./shm-ring";

const SITES: readonly LoraSite[] = ["qkv", "o", "gate_up", "down"];
/** Rows of one UCX request (native kMaxRows). */
const MAX_UCX_ROWS = 1 << 20;

/** Whether this process's native addon links UCX, and which version. */
export function ucxSupport(): { available: boolean; version: string } {
  return native.ucxInfo();
}

export interface UcxServerOptions {
  model: ModelConfig;
  /** The host the listener binds: the LoRA server's advertised host (workers on other hosts reach it). */
  bindHost: string;
}

/** The LoRA server's side: the UCX listener and its native thread. */
export class UcxServer {
  private readonly handle: UcxServerHandle;

  constructor(options: UcxServerOptions) {
    if (!native.ucxInfo().available)
      throw new FailedPreconditionError("this LoRA server's native core was built without UCX");
    const shapes = SITES.map((s) => siteShape(options.model, s));
    this.handle = native.ucxServerStart({
      numLayers: options.model.numLayers,
      numExperts: options.model.numExperts,
      hIn: shapes.map((s) => s.hIn),
      nOut: shapes.map((s) => s.nOut),
      bindHost: options.bindHost,
    });
  }

  /** The listener's address and a fresh session key for one worker. */
  attach(workerId: string): UcxAttachment {
    return native.ucxServerAttach(this.handle, workerId);
  }

  /** Replaces the adapters the UCX thread computes with (call on every pool change). */
  setTables(slots: readonly string[], sites: readonly RingSiteTable[]): void {
    native.ucxServerSetTables(this.handle, slots, sites);
  }

  stats(): UcxServerStats {
    return native.ucxServerStats(this.handle);
  }

  /** Closes every connection (the workers' sites fail with UNAVAILABLE) and joins the thread. */
  stop(): void {
    native.ucxServerStop(this.handle);
  }
}

/** The worker's side: one UCX connection to one LoRA server. */
export class UcxChannel {
  private closed = false;
  /** Notices a failed connection between sites (off the per-site path). */
  private readonly watch: NodeJS.Timeout;

  private constructor(
    /** The server's listener, host:port. */
    readonly address: string,
    /** What the native step takes (`Napi::External<std::shared_ptr<lm::SiteBackend>>`). */
    readonly backend: SiteBackendHandle,
    private readonly timeoutMs: number,
  ) {
    this.watch = setInterval(() => {
      if (!native.ucxCheck(this.backend)) this.close();
    }, 500).unref();
  }

  /** Asks the LoRA server for its UCX listener and a session key, then connects (one round trip). */
  static async attach(
    client: LoraServerServiceClient,
    request: { workerId: string },
    timeoutMs: number,
  ): Promise<UcxChannel> {
    if (!native.ucxInfo().available)
      throw new FailedPreconditionError("this worker's native core was built without UCX");
    const reply = await new Promise<{ host: string; port: number; key: string }>((resolve, reject) =>
      client.attachUcx(request, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) =>
        err ? reject(fromServiceError(err, { peer: "the LoRA server" })) : resolve(res),
      ),
    );
    const backend = await native.ucxConnect(reply.host, reply.port, reply.key, timeoutMs);
    return new UcxChannel(`${reply.host}:${reply.port}`, backend, timeoutMs);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Whether a site of this size can go this way (a UCX request has no slot limit; rows are capped). */
  fits(work: Pick<SiteWork, "rows">): boolean {
    return !this.closed && work.rows <= MAX_UCX_ROWS;
  }

  /**
   * Runs one site on a libuv thread; resolves with its delta [rows, nOut]. A failed, closed or
   * silent connection rejects with an UnavailableError (the channel is then closed), an adapter the
   * server does not hold with NotFoundError.
   */
  async request(work: SiteWork): Promise<Float32Array> {
    if (this.closed) throw new UnavailableError(`the UCX connection to ${this.address} is closed`);
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

  /** Later sites fail; the connection goes with the handle. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.watch);
    native.ucxClose(this.backend);
  }
}
