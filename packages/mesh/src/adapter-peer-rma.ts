/**
 * Peer fetch over UCX RMA (issue 19): the fast path of `fetchFromPeer`. The holder registers the
 * version's files back to back in one UCX memory region and answers `OfferAdapterRma` (cluster-token
 * checked like every internal RPC) with the region's listener, address, packed remote key and file
 * layout; its RMA listener then accepts the caller's IP for a while. The fetcher reads the region
 * with one RMA get and writes the files into its cache, which checks the content hash. The native
 * side lives in `@loramesh/native` (this package only sees these two interfaces), so an executor
 * without UCX simply passes none and peers stream over gRPC.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { credentials, Metadata, type ServerUnaryCall } from "@grpc/grpc-js";
import { clientChannelOptions, clusterClientOptions, fromServiceError } from "@loramesh/core";
import { FailedPreconditionError, UnavailableError } from "@loramesh/errors";
import {
  AdapterPeerServiceClient,
  SERVICE_NAMES,
  type AdapterRmaOffer,
  type FetchAdapterRequest,
} from "@loramesh/proto";
import { PEFT_CONFIG, PEFT_WEIGHTS, type AdapterCache, type CachedAdapter } from "@loramesh/sources";

export interface RmaFile {
  name: string;
  offset: number;
  size: number;
}

export interface RmaRegion {
  host: string;
  port: number;
  address: number;
  rkey: Uint8Array;
  length: number;
}

/** The holder's UCX RMA server, as adapter-peer needs it. */
export interface PeerRmaHolder {
  /**
   * The region holding this version (registering `load()`'s bytes the first time) and lets
   * `peerIp` connect to the RMA listener for a while.
   */
  offer(contentHash: string, load: () => Uint8Array, peerIp: string): RmaRegion;
}

/** The fetcher's RMA get. */
export interface PeerRmaReader {
  get(region: RmaRegion, timeoutMs: number): Promise<Uint8Array>;
}

/** The files a peer hands out, in region order. */
const FILES = [PEFT_CONFIG, PEFT_WEIGHTS] as const;

/** Holder: answers one OfferAdapterRma for the adapter directory `dir`. */
export function offerRegion(
  rma: PeerRmaHolder | undefined,
  request: FetchAdapterRequest,
  dir: string,
  call: ServerUnaryCall<FetchAdapterRequest, AdapterRmaOffer>,
): AdapterRmaOffer {
  if (!rma) throw new FailedPreconditionError("this executor serves peer fetch over gRPC only (no UCX)");
  const ip = peerIpv4(call.getPeer());
  if (ip === undefined) throw new FailedPreconditionError(`RMA peer fetch needs an IPv4 peer, not ${call.getPeer()}`);
  const sizes = FILES.map((name) => readFileSync(join(dir, name)).length);
  let offset = 0;
  const files = FILES.map((name, i) => {
    const f = { fileName: name, offset, size: sizes[i] as number };
    offset += f.size;
    return f;
  });
  const region = rma.offer(request.contentHash, () => Buffer.concat(FILES.map((n) => readFileSync(join(dir, n)))), ip);
  if (region.length !== offset)
    throw new UnavailableError(`the registered region of ${request.contentHash.slice(0, 12)} changed size`);
  const rkey = Buffer.from(region.rkey.buffer, region.rkey.byteOffset, region.rkey.byteLength);
  return { host: region.host, port: region.port, address: region.address, rkey, length: region.length, files };
}

/** "ipv4:10.0.0.2:4321" or "10.0.0.2:4321" → "10.0.0.2"; undefined for IPv6 or a socket path. */
function peerIpv4(peer: string): string | undefined {
  const m = /^(?:ipv4:)?(\d{1,3}(?:\.\d{1,3}){3}):\d+$/.exec(peer);
  return m?.[1];
}

/**
 * Fetcher: asks the peer at `address` for the version's region, reads it with one RMA get and
 * writes the files into `cache` (hash-checked there). Rejects with a typed error on any failure;
 * the caller then streams over gRPC.
 */
export async function fetchFromPeerRma(
  address: string,
  adapterId: string,
  contentHash: string,
  cache: AdapterCache,
  reader: PeerRmaReader,
  deadlineMs = 120_000,
): Promise<CachedAdapter> {
  const deadline = Date.now() + deadlineMs;
  const client = new AdapterPeerServiceClient(address, credentials.createInsecure(), {
    ...clientChannelOptions({ service: SERVICE_NAMES.adapterPeer[0] }),
    ...clusterClientOptions(),
  });
  try {
    const offer = await new Promise<AdapterRmaOffer>((resolve, reject) =>
      client.offerAdapterRma({ adapterId, contentHash }, new Metadata(), { deadline }, (err, res) =>
        err ? reject(fromServiceError(err, { peer: address })) : resolve(res),
      ),
    );
    checkLayout(offer);
    const bytes = await reader.get(offer, Math.max(1, deadline - Date.now()));
    return await cache.ingest(async (sink) => {
      for (const f of offer.files) {
        const writer = await sink.begin(f.fileName, f.size);
        await writer.write(Buffer.from(bytes.buffer, bytes.byteOffset + f.offset, f.size));
        await writer.end();
      }
    }, contentHash);
  } finally {
    client.close();
  }
}

/** The offer's files must be the two PEFT files, back to back, filling the region. */
function checkLayout(offer: AdapterRmaOffer): void {
  let offset = 0;
  const names = offer.files.map((f) => f.fileName);
  const ok =
    names.length === FILES.length &&
    FILES.every((n, i) => names[i] === n) &&
    offer.files.every((f) => {
      const fits = f.offset === offset && f.size >= 0;
      offset += f.size;
      return fits;
    }) &&
    offset === offer.length;
  if (!ok) throw new UnavailableError(`the peer's RMA offer has an unexpected file layout (${names.join(", ")})`);
}
