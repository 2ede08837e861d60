/**
 * Where an executor gets an adapter's files before it loads them, cheapest first: a local source is
 * read where it is; a remote one from the host's content-addressed cache, else from a peer executor
 * that holds it (one UCX RMA get when both have UCX, else the gRPC stream), else fetched from its
 * source. Every path checks the content hash recorded
 * at registration, so a changed source is refused rather than mixed with the old version.
 */
import type { Logger } from "@loramesh/core";
import { isLoraMeshError } from "@loramesh/errors";
import { fetchAdapter, type AdapterCache } from "@loramesh/sources";
import { fetchFromPeer, type HeldAdapterLookup } from "./adapter-peer";
import { fetchFromPeerRma, type PeerRmaReader } from "./adapter-peer-rma";
import type { PeerRef } from "./jobs";

export type AdapterOrigin = "local" | "cache" | "peer" | "source";
/** How a peer fetch travelled. */
export type PeerPath = "ucx" | "grpc";

export interface MaterializeRequest {
  adapterId: string;
  /** The local directory (a local source). */
  dir: string;
  /** The remote source; "" or absent for a local one. */
  source?: string;
  contentHash: string;
  peers?: readonly PeerRef[];
}

export interface Materialized {
  dir: string;
  origin: AdapterOrigin;
  /** The peer it came from, and how (origin "peer"). */
  peer?: string;
  path?: PeerPath;
}

export class AdapterMaterializer {
  /** Adapters this executor loaded, by id, for serving peers. */
  private readonly held = new Map<string, { dir: string; contentHash: string }>();
  readonly counts: Record<AdapterOrigin, number> = { local: 0, cache: 0, peer: 0, source: 0 };
  /** Peer fetches by the path that served them, and RMA attempts that fell back to gRPC. */
  readonly peerPaths = { ucx: 0, grpc: 0, ucxFallbacks: 0 };

  constructor(
    readonly cache: AdapterCache,
    private readonly selfId: string,
    private readonly logger: Logger,
    /** The UCX RMA get, when this executor's native core has UCX. */
    private readonly rma?: PeerRmaReader,
  ) {}

  async materialize(request: MaterializeRequest): Promise<Materialized> {
    const out = await this.find(request);
    this.counts[out.origin]++;
    if (out.path) this.peerPaths[out.path]++;
    this.held.set(request.adapterId, { dir: out.dir, contentHash: request.contentHash });
    this.logger.info("adapter files ready", {
      adapterId: request.adapterId,
      origin: out.origin,
      peer: out.peer,
      path: out.path,
    });
    return out;
  }

  /** Stops serving an unloaded adapter to peers. */
  forget(adapterId: string): void {
    this.held.delete(adapterId);
  }

  /** For AdapterPeerService: an adapter this executor loaded, or any cached version of the hash. */
  readonly lookup: HeldAdapterLookup = (adapterId, contentHash) => {
    const held = this.held.get(adapterId);
    if (held && held.contentHash === contentHash) return held.dir;
    try {
      return this.cache.lookup(contentHash);
    } catch {
      return undefined; // not a hash: nothing of ours
    }
  };

  private async find(request: MaterializeRequest): Promise<Materialized> {
    const { source, contentHash } = request;
    if (!source) return { dir: request.dir, origin: "local" };
    const cached = this.cache.lookup(contentHash);
    if (cached !== undefined) return { dir: cached, origin: "cache" };
    for (const peer of request.peers ?? []) {
      if (peer.executorId === this.selfId || peer.address === "") continue;
      const fast = await this.fetchRma(peer, request);
      if (fast) return fast;
      try {
        const got = await fetchFromPeer(peer.address, request.adapterId, contentHash, this.cache);
        return { dir: got.dir, origin: "peer", peer: peer.executorId, path: "grpc" };
      } catch (err) {
        // A peer that lost the adapter or went away is not fatal: the source still has it.
        if (!isLoraMeshError(err)) throw err;
        this.logger.warn("peer fetch failed; trying the next peer or the source", {
          adapterId: request.adapterId,
          peer: peer.executorId,
          error: err.message,
        });
      }
    }
    const fetched = await fetchAdapter(source, { cache: this.cache, expectedHash: contentHash });
    return { dir: fetched.dir, origin: fetched.fromCache ? "cache" : "source" };
  }

  /** One RMA get from the peer; undefined (logged, counted) on any failure, so gRPC streams it instead. */
  private async fetchRma(peer: PeerRef, request: MaterializeRequest): Promise<Materialized | undefined> {
    if (!this.rma) return undefined;
    try {
      const got = await fetchFromPeerRma(peer.address, request.adapterId, request.contentHash, this.cache, this.rma);
      return { dir: got.dir, origin: "peer", peer: peer.executorId, path: "ucx" };
    } catch (err) {
      this.peerPaths.ucxFallbacks++;
      this.logger.warn("UCX RMA peer fetch failed; streaming over gRPC", {
        adapterId: request.adapterId,
        peer: peer.executorId,
        error: err instanceof Error ? err.message : String(err),
      });
      return undefined;
    }
  }
}
