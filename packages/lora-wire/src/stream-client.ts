/**
 * The worker's end of one LoRA server: the Execute stream, and a native fast channel when the
 * caller allows one: with a same-host server a shared-memory ring (`AttachSharedMemory`, then sites
 * go through native doorbells; sites too big for a ring slot still use the stream), with a server on
 * another host a UCX connection (`AttachUcx`, then sites go as UCX active messages). A server that
 * refuses the fast channel (no UCX, another host) leaves the stream in use. The fast channel opens
 * on `connect` (the worker calls it once placement names the server) or else on the first request;
 * the stream on the first site that takes it. A lost stream, a
 * timeout, an unmatched reply or a dead ring fails what is in flight with UNAVAILABLE and the next
 * request opens a new one.
 */
import { credentials, type ClientDuplexStream } from "@grpc/grpc-js";
import { clusterClientOptions, type Logger } from "@loramesh/core";
import { NotFoundError, UnavailableError } from "@loramesh/errors";
import { LoraServerServiceClient, type LoraResult, type LoraStreamRequest } from "@loramesh/proto";
import { decodeReply, encodeOpen, encodeWork, type SiteWork, type WireTransport } from "./messages";
import { PendingReplies } from "./pending-replies";
import { ShmRing } from "./shm-ring";
import { siteToProto } from "./sites";
import { UcxChannel } from "./ucx-channel";

/** Activation tensors must fit one message. */
export const WIRE_MESSAGE_LIMITS = {
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
  "grpc.max_send_message_length": 64 * 1024 * 1024,
} as const;

export interface LoraStreamClientOptions {
  serverId: string;
  address: string;
  workerId: string;
  hostId: string;
  /** Ask the server for a shared-memory ring (the caller decided the server is on this host). */
  sharedMemory: boolean;
  /** Otherwise ask the server for a UCX connection (the caller decided the server is on another host). */
  ucx?: boolean;
  /** A round trip slower than this fails. */
  timeoutMs?: number;
  logger: Logger;
}

type Stream = ClientDuplexStream<LoraStreamRequest, LoraResult>;

export class LoraStreamClient {
  private readonly client: LoraServerServiceClient;
  private stream: Stream | undefined;
  private pending: PendingReplies | undefined;
  private fast: ShmRing | UcxChannel | undefined;
  private fastAttach: Promise<ShmRing | UcxChannel | undefined> | undefined;
  /** After a refused attach, the stream alone is used until then (ms since epoch). */
  private fastRetryAt = 0;
  private lock: Promise<void> = Promise.resolve();
  private step = 0;
  private closed = false;

  constructor(private readonly options: LoraStreamClientOptions) {
    this.client = new LoraServerServiceClient(options.address, credentials.createInsecure(), {
      ...WIRE_MESSAGE_LIMITS,
      ...clusterClientOptions(),
    });
  }

  get transport(): WireTransport {
    if (!this.fast || this.fast.isClosed) return "grpc";
    return this.fast instanceof ShmRing ? "shm" : "ucx";
  }

  /** The ring's native site backend, once attached (what the native step takes). */
  get ringBackend(): ShmRing["backend"] | undefined {
    return this.fast instanceof ShmRing && !this.fast.isClosed ? this.fast.backend : undefined;
  }

  /** The fast channel's native site backend (ring or UCX), once attached (what the native step takes). */
  get siteBackend(): ShmRing["backend"] | undefined {
    return this.fast && !this.fast.isClosed ? this.fast.backend : undefined;
  }

  /**
   * Starts opening the fast channel now, so that no request waits for the attach (and no worker's
   * first sites run alone while another's attach is still under way). A no-op when there is no fast
   * channel to open, one is open (or opening: this joins it), or a refusal's back-off runs; a failure
   * is logged as on first use. Resolves with the transport sites will take once the attempt settles.
   */
  async connect(): Promise<WireTransport> {
    await this.fastChannel();
    return this.transport;
  }

  /** Sends one site and resolves with its delta [rows, nOut] and the transport it took. */
  async request(work: SiteWork): Promise<Float32Array> {
    const ring = await this.fastChannel();
    if (ring?.fits(work)) {
      // Requests on a fast channel go one by one (the JS path uses one slot; the native step may use more).
      const previous = this.lock;
      let release!: () => void;
      this.lock = new Promise((r) => (release = r));
      await previous;
      try {
        return await ring.request(work);
      } catch (err) {
        // The ring's table leaves out adapters still loading layer by layer; the stream waits for
        // the layer (or answers "not resident" itself), so such a site goes that way.
        if (!(err instanceof NotFoundError)) throw err;
      } finally {
        release();
      }
    }
    const { stream, pending } = this.open();
    const stepId = ++this.step;
    const reply = pending.expect(stepId, work.layer, siteToProto(work.site));
    stream.write(encodeWork(stepId, work));
    return decodeReply(await reply, work, this.options.serverId);
  }

  /** The fast channel to this server, attaching on first use; undefined when off or refused. */
  private async fastChannel(): Promise<ShmRing | UcxChannel | undefined> {
    const kind =
      this.options.sharedMemory && process.platform === "linux" ? "shm" : this.options.ucx ? "ucx" : undefined;
    if (kind === undefined || this.closed) return undefined;
    if (this.fast && !this.fast.isClosed) return this.fast;
    if (!this.fastAttach && Date.now() < this.fastRetryAt) return undefined;
    const { serverId } = this.options;
    const timeoutMs = this.options.timeoutMs ?? 30_000;
    this.fastAttach ??= (
      kind === "shm"
        ? ShmRing.attach(this.client, { workerId: this.options.workerId, hostId: this.options.hostId }, timeoutMs)
        : UcxChannel.attach(this.client, { workerId: this.options.workerId }, timeoutMs)
    ).then(
      (channel) => {
        // Closed while attaching (the server failed, or the worker stops): let the ring go at once.
        if (this.closed) {
          channel.close();
          return undefined;
        }
        this.fast = channel;
        if (channel instanceof ShmRing) this.options.logger.info("LoRA ring attached", { server: serverId });
        else this.options.logger.info("LoRA UCX connected", { server: serverId, listener: channel.address });
        return channel;
      },
      (err: unknown) => {
        this.fastRetryAt = Date.now() + 5_000;
        const what = kind === "shm" ? "shared-memory ring" : "UCX connection";
        this.options.logger.warn(`${what} unavailable; using the gRPC stream`, {
          server: serverId,
          error: (err as Error).message,
        });
        return undefined;
      },
    );
    const channel = await this.fastAttach;
    this.fastAttach = undefined;
    return channel;
  }

  /** Drops the stream (the next request reopens it) and fails everything in flight. */
  reset(err: Error = new UnavailableError("LoRA stream reset")): void {
    const stream = this.stream;
    const pending = this.pending;
    this.stream = undefined;
    this.pending = undefined;
    stream?.cancel();
    pending?.failAll(err);
    this.fast?.close();
    this.fast = undefined;
  }

  close(): void {
    this.closed = true;
    this.reset(new UnavailableError("worker shutting down"));
    this.client.close();
  }

  private open(): { stream: Stream; pending: PendingReplies } {
    if (this.stream && this.pending) return { stream: this.stream, pending: this.pending };
    const { serverId, address } = this.options;
    const stream = this.client.execute();
    const pending = new PendingReplies({
      timeoutMs: this.options.timeoutMs ?? 30_000,
      peer: serverId,
      onTimeout: (err) => {
        if (this.stream === stream) this.reset(err);
      },
    });
    stream.write(encodeOpen({ workerId: this.options.workerId, hostId: this.options.hostId }));
    const fail = (reason: string): void => {
      if (this.stream === stream)
        this.reset(new UnavailableError(`lost the LoRA stream to ${serverId} (${address}): ${reason}`));
    };
    stream.on("data", (reply: LoraResult) => {
      if (!pending.settle(reply)) fail(`unexpected reply for step ${reply.stepId}`);
    });
    stream.on("error", (err: Error) => fail(err.message));
    stream.on("end", () => fail("closed"));
    this.stream = stream;
    this.pending = pending;
    this.options.logger.info("LoRA stream opened", { server: serverId });
    return { stream, pending };
  }
}
