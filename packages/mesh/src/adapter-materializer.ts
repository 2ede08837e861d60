/**
 * Where an executor gets an adapter's files before it loads them, cheapest first: a local source is
 * read where it is; a remote one from the host's content-addressed cache, else streamed from a peer
 * executor that holds it, else fetched from its source. Every path checks the content hash recorded
 * at registration, so a changed source is refused rather than mixed with the old version.
 */
import type { Logger } from "@loramesh/core";
import { isLoraMeshError } from "@loramesh/errors";
import { fetchAdapter, type AdapterCache } from "@loramesh/sources";
import { fetchFromPeer, type HeldAdapterLookup } from "./adapter-peer";
import type { PeerRef } from "./jobs";

export type AdapterOrigin = "local" | "cache" | "peer" | "source";

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
  /** The peer it came from (origin "peer"). */
  peer?: string;
}

export class AdapterMaterializer {
  /** Adapters this executor loaded, by id, for serving peers. */
  private readonly held = new Map<string, { dir: string; contentHash: string }>();
  readonly counts: Record<AdapterOrigin, number> = { local: 0, cache: 0, peer: 0, source: 0 };

  constructor(
    readonly cache: AdapterCache,
    private readonly selfId: string,
    private readonly logger: Logger,
  ) {}

  async materialize(request: MaterializeRequest): Promise<Materialized> {
    const out = await this.find(request);
    this.counts[out.origin]++;
    this.held.set(request.adapterId, { dir: out.dir, contentHash: request.contentHash });
    this.logger.info("adapter files ready", { adapterId: request.adapterId, origin: out.origin, peer: out.peer });
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
      try {
        const got = await fetchFromPeer(peer.address, request.adapterId, contentHash, this.cache);
        return { dir: got.dir, origin: "peer", peer: peer.executorId };
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
}
