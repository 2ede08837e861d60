/**
 * Peer adapter fetch over UCX RMA (issue 19), the native side of `@loramesh/mesh`'s
 * `PeerRmaHolder` / `PeerRmaReader`: the holder keeps one registered region per adapter version
 * (started on the first offer, listener on the executor's advertised host) and frees a region once
 * no offer asked for it for `idleMs`, far longer than a fetch's get may take (on TCP, UCX serves an
 * emulated get from the holder's memory, so a region must outlive every get of it).
 */
import type { Logger } from "@loramesh/core";
import { FailedPreconditionError } from "@loramesh/errors";
import { native, type UcxRegionServerHandle, type UcxRegionStats } from "@loramesh/native";

/** A region must outlive any get that started from its offer (fetch deadlines are ~2 min). */
const DEFAULT_IDLE_MS = 10 * 60_000;
/** How long an offer lets the caller's address connect to the RMA listener. */
const ALLOW_MS = 2 * 60_000;

interface Region {
  host: string;
  port: number;
  address: number;
  rkey: Uint8Array;
  length: number;
}

/** The holder's regions. Construct only where `native.ucxInfo().available`. */
export class UcxPeerRegions {
  private server: { host: string; port: number; handle: UcxRegionServerHandle } | undefined;
  private readonly regions = new Map<string, { id: number; region: Region; usedAt: number }>();
  private readonly sweep: NodeJS.Timeout;
  private stopped = false;

  constructor(
    /** The host the RMA listener binds (the executor's advertised host), known once it serves. */
    private readonly bindHost: () => string | undefined,
    private readonly logger: Logger,
    private readonly idleMs = DEFAULT_IDLE_MS,
  ) {
    this.sweep = setInterval(() => this.expire(), Math.min(60_000, idleMs)).unref();
  }

  offer(contentHash: string, load: () => Uint8Array, peerIp: string): Region {
    const server = this.start();
    const known = this.regions.get(contentHash);
    const entry = known ?? this.register(server.handle, contentHash, load(), server);
    entry.usedAt = performance.now();
    native.ucxRegionAllow(server.handle, peerIp, ALLOW_MS);
    return entry.region;
  }

  stats(): UcxRegionStats | undefined {
    return this.server ? native.ucxRegionStats(this.server.handle) : undefined;
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.sweep);
    if (this.server) native.ucxRegionServerStop(this.server.handle);
    this.server = undefined;
    this.regions.clear();
  }

  private start(): { host: string; port: number; handle: UcxRegionServerHandle } {
    if (this.stopped) throw new FailedPreconditionError("the executor is stopping");
    if (this.server) return this.server;
    const host = this.bindHost();
    if (host === undefined) throw new FailedPreconditionError("the executor is not serving yet");
    this.server = native.ucxRegionServerStart(host);
    this.logger.info("UCX RMA listener started (peer adapter fetch)", { host, port: this.server.port });
    return this.server;
  }

  private register(
    handle: UcxRegionServerHandle,
    contentHash: string,
    bytes: Uint8Array,
    at: { host: string; port: number },
  ): { id: number; region: Region; usedAt: number } {
    const o = native.ucxRegionAdd(handle, bytes);
    const entry = {
      id: o.id,
      region: { host: at.host, port: at.port, address: o.address, rkey: o.rkey, length: o.length },
      usedAt: performance.now(),
    };
    this.regions.set(contentHash, entry);
    return entry;
  }

  private expire(): void {
    if (!this.server) return;
    for (const [hash, entry] of this.regions) {
      if (performance.now() - entry.usedAt < this.idleMs) continue;
      native.ucxRegionRemove(this.server.handle, entry.id);
      this.regions.delete(hash);
    }
  }
}

/** The fetcher's RMA get (`PeerRmaReader`). */
export const ucxPeerReader = {
  get(region: Region, timeoutMs: number): Promise<Uint8Array> {
    return native.ucxRegionGet(region.host, region.port, region.address, region.rkey, region.length, timeoutMs);
  },
};
