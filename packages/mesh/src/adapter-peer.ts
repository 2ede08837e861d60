/**
 * Peer fetch: an executor that holds an adapter streams its files to another executor that must
 * load it (`AdapterPeerService.FetchAdapter`), so a new replica or a move's target does not go back
 * to the source. The receiver writes the chunks into its host's adapter cache and checks the
 * content hash before anything becomes visible.
 */
import { once } from "node:events";
import { createReadStream, statSync } from "node:fs";
import { join } from "node:path";
import { credentials, type ServerWritableStream } from "@grpc/grpc-js";
import {
  clientChannelOptions,
  clusterClientOptions,
  fromServiceError,
  isServiceError,
  serverStreamHandler,
  unaryHandler,
  type Logger,
} from "@loramesh/core";
import { CancelledError, InvalidArgumentError, NotFoundError, UnavailableError } from "@loramesh/errors";
import {
  AdapterPeerServiceClient,
  AdapterPeerServiceService,
  SERVICE_NAMES,
  type AdapterFileChunk,
  type AdapterPeerServiceServer,
  type FetchAdapterRequest,
} from "@loramesh/proto";
import {
  PEFT_CONFIG,
  PEFT_WEIGHTS,
  type AdapterCache,
  type CachedAdapter,
  type CacheFileWriter,
} from "@loramesh/sources";
import { offerRegion, type PeerRmaHolder } from "./adapter-peer-rma";
import { encodeFileChunk } from "./file-chunk-encoding";

/**
 * Chunk size of the gRPC stream. Measured on the loaded 2-core machine (sender CPU for 256 MiB,
 * bench/src/adapter-fetch-bench.ts): 1 MiB chunks cost about 3× the CPU of 256 KiB ones (large
 * buffers are fresh allocations each time, and GC runs on their external memory); below 256 KiB
 * the per-message overhead starts to show. Messages must stay under gRPC's 4 MiB default limit.
 */
const CHUNK_BYTES = 256 << 10;
/**
 * The receiver's HTTP/2 flow-control window. grpc-js's default (64 KiB) makes a bulk stream wait
 * for a window update every 64 KiB; a bigger one keeps the sender busy.
 */
const RECEIVE_WINDOW_BYTES = 16 << 20;

/** The adapter directory this executor can hand out for (id, hash); undefined when it has none. */
export type HeldAdapterLookup = (adapterId: string, contentHash: string) => string | undefined;

/** The AdapterPeerService entry of an executor's service list; `rma` adds the UCX RMA offer. */
export function adapterPeerService(held: HeldAdapterLookup, logger: Logger, rma?: PeerRmaHolder) {
  const notHeld = (request: FetchAdapterRequest): NotFoundError =>
    new NotFoundError(`adapter ${request.adapterId} (${request.contentHash.slice(0, 12)}) is not held here`);
  const implementation: AdapterPeerServiceServer = {
    offerAdapterRma: unaryHandler(logger, async (request: FetchAdapterRequest, call) => {
      const dir = held(request.adapterId, request.contentHash);
      if (dir === undefined) throw notHeld(request);
      return offerRegion(rma, request, dir, call);
    }),
    fetchAdapter: serverStreamHandler(logger, async (request: FetchAdapterRequest, call, ctx) => {
      const dir = held(request.adapterId, request.contentHash);
      if (dir === undefined) throw notHeld(request);
      for (const name of [PEFT_CONFIG, PEFT_WEIGHTS]) await sendFile(call, dir, name, ctx.signal);
    }),
  };
  // The generated definition, with chunks encoded in one copy (file-chunk-encoding.ts).
  const definition: typeof AdapterPeerServiceService = {
    ...AdapterPeerServiceService,
    fetchAdapter: { ...AdapterPeerServiceService.fetchAdapter, responseSerialize: encodeFileChunk },
  };
  return { name: SERVICE_NAMES.adapterPeer[0], definition, implementation };
}

async function sendFile(
  call: ServerWritableStream<FetchAdapterRequest, AdapterFileChunk>,
  dir: string,
  fileName: string,
  signal: AbortSignal,
): Promise<void> {
  const path = join(dir, fileName);
  const fileSize = statSync(path).size;
  let offset = 0;
  for await (const data of createReadStream(path, { highWaterMark: CHUNK_BYTES })) {
    if (signal.aborted) throw new CancelledError("the peer cancelled the fetch");
    const chunk = data as Buffer;
    if (!call.write({ fileName, fileSize, offset, data: chunk })) await once(call, "drain");
    offset += chunk.length;
  }
  if (fileSize === 0) call.write({ fileName, fileSize, offset: 0, data: Buffer.alloc(0) });
}

/**
 * Streams one adapter version from the peer at `address` into `cache`. Rejects with a typed error
 * (NOT_FOUND when the peer does not hold it, UNAVAILABLE when it cannot be reached or the stream
 * breaks, FAILED_PRECONDITION when the bytes do not hash to `contentHash`); nothing stays behind.
 */
export async function fetchFromPeer(
  address: string,
  adapterId: string,
  contentHash: string,
  cache: AdapterCache,
  deadlineMs = 120_000,
): Promise<CachedAdapter> {
  const client = new AdapterPeerServiceClient(address, credentials.createInsecure(), {
    ...clientChannelOptions({ service: SERVICE_NAMES.adapterPeer[0] }),
    "grpc-node.flow_control_window": RECEIVE_WINDOW_BYTES,
    ...clusterClientOptions(),
  });
  const call = client.fetchAdapter({ adapterId, contentHash }, { deadline: new Date(Date.now() + deadlineMs) });
  try {
    return await cache.ingest(async (sink) => {
      const seen = new Set<string>();
      let writer: CacheFileWriter | undefined;
      let current = "";
      let written = 0;
      for await (const raw of call) {
        const chunk = raw as AdapterFileChunk;
        if (chunk.fileName !== current) {
          await writer?.end();
          if (seen.has(chunk.fileName)) throw new InvalidArgumentError(`the peer sent ${chunk.fileName} twice`);
          seen.add(chunk.fileName);
          current = chunk.fileName;
          writer = await sink.begin(chunk.fileName, chunk.fileSize);
          written = 0;
        }
        if (chunk.offset !== written) throw new UnavailableError(`the peer's ${current} skipped bytes`);
        await writer?.write(chunk.data);
        written += chunk.data.length;
      }
      await writer?.end();
    }, contentHash);
  } catch (err) {
    call.cancel();
    if (isServiceError(err)) throw fromServiceError(err);
    throw err;
  } finally {
    client.close();
  }
}
