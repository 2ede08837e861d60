/**
 * Peer adapter fetch over UCX RMA on a LoRA server (issue 19): with UCX in the native core, this
 * server offers the adapters it holds as registered regions (`OfferAdapterRma`, listener on its
 * advertised host) and fetches from peers with one RMA get, falling back to the gRPC stream on any
 * failure (`AdapterMaterializer`). Without UCX both sides stay on the stream.
 */
import type { Logger } from "@loramesh/core";
import { ucxPeerReader, UcxPeerRegions, ucxSupport } from "@loramesh/lora-wire";
import { AdapterMaterializer, type PeerRmaReader } from "@loramesh/mesh";
import { AdapterCache } from "@loramesh/sources";
import { telemetry } from "@loramesh/telemetry";

export interface PeerFetchUcx {
  /** The RMA get for the materializer (undefined without UCX). */
  reader: PeerRmaReader | undefined;
  /** The regions offered to peers (undefined without UCX). */
  holder: UcxPeerRegions | undefined;
  /** The address this server advertises (host:port): the RMA listener binds its host. */
  advertise(address: string): void;
  stop(): void;
}

export function peerFetchUcx(logger: Logger): PeerFetchUcx {
  if (!ucxSupport().available) return { reader: undefined, holder: undefined, advertise: () => {}, stop: () => {} };
  let host: string | undefined;
  const holder = new UcxPeerRegions(() => host, logger);
  return {
    reader: ucxPeerReader,
    holder,
    advertise: (address) => {
      host = address.startsWith("[") ? address.slice(1, address.indexOf("]")) : address.replace(/:\d+$/, "");
    },
    stop: () => holder.stop(),
  };
}

/** The server's adapter files (host cache, peers over RMA or gRPC, source), with the peer-path metric. */
export function adapterFiles(
  options: { adapterCacheDir: string; adapterCacheBytes: number; executorId: string; logger: Logger },
  rma: PeerFetchUcx,
): AdapterMaterializer {
  const files = new AdapterMaterializer(
    new AdapterCache({ root: options.adapterCacheDir, limitBytes: options.adapterCacheBytes }),
    options.executorId,
    options.logger,
    rma.reader,
  );
  peerFetchMetrics(files);
  return files;
}

/** `loramesh_adapter_peer_fetches_total{path}`: which path served each peer fetch. */
function peerFetchMetrics(files: AdapterMaterializer): void {
  telemetry()
    .meter.createObservableCounter("loramesh_adapter_peer_fetches_total", {
      description: "adapter files fetched from a peer, by path (ucx_fallback: an RMA attempt that fell back to gRPC)",
    })
    .addCallback((r) => {
      r.observe(files.peerPaths.ucx, { path: "ucx" });
      r.observe(files.peerPaths.grpc, { path: "grpc" });
      r.observe(files.peerPaths.ucxFallbacks, { path: "ucx_fallback" });
    });
}
