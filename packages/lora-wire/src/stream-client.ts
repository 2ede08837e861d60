/**
 * The worker's end of one Execute stream to one LoRA server. The stream opens lazily on the first
 * request; with a same-host server it first creates the shared region and announces it in `open`.
 * A lost stream, a timeout or an unmatched reply fails what is in flight with UNAVAILABLE and the
 * next request opens a new stream.
 */
import { credentials, type ClientDuplexStream } from "@grpc/grpc-js";
import { clusterClientOptions, type Logger } from "@loramesh/core";
import { UnavailableError } from "@loramesh/errors";
import { LoraServerServiceClient, type LoraResult, type LoraStreamRequest } from "@loramesh/proto";
import { decodeReply, encodeOpen, encodeWork, type SiteWork, type WireTransport } from "./messages";
import { PendingReplies } from "./pending-replies";
import { siteToProto } from "./sites";
import { DEFAULT_SHARED_REGION_BYTES, SharedRegion } from "./shared-region";

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
  /** Create a shared region for this stream (the caller decided the server is on this host). */
  sharedMemory: boolean;
  sharedMemoryBytes?: number;
  /** A round trip slower than this fails. */
  timeoutMs?: number;
  logger: Logger;
}

type Stream = ClientDuplexStream<LoraStreamRequest, LoraResult>;

export class LoraStreamClient {
  private readonly client: LoraServerServiceClient;
  private stream: Stream | undefined;
  private pending: PendingReplies | undefined;
  private region: SharedRegion | undefined;
  private lock: Promise<void> = Promise.resolve();
  private step = 0;

  constructor(private readonly options: LoraStreamClientOptions) {
    this.client = new LoraServerServiceClient(options.address, credentials.createInsecure(), {
      ...WIRE_MESSAGE_LIMITS,
      ...clusterClientOptions(),
    });
  }

  get transport(): WireTransport {
    return this.region ? "shm" : "grpc";
  }

  /** Sends one site and resolves with its delta [rows, nOut]. */
  async request(work: SiteWork): Promise<Float32Array> {
    // The shared region holds one item at a time, so requests on a stream go one by one.
    const previous = this.lock;
    let release!: () => void;
    this.lock = new Promise((r) => (release = r));
    await previous;
    try {
      const { stream, pending } = this.open();
      const stepId = ++this.step;
      const region = this.region;
      const reply = pending.expect(stepId, work.layer, siteToProto(work.site));
      stream.write(encodeWork(stepId, work, region));
      return decodeReply(await reply, work, this.options.serverId, region);
    } finally {
      release();
    }
  }

  /** Drops the stream (the next request reopens it) and fails everything in flight. */
  reset(err: Error = new UnavailableError("LoRA stream reset")): void {
    const stream = this.stream;
    const pending = this.pending;
    this.stream = undefined;
    this.pending = undefined;
    stream?.cancel();
    pending?.failAll(err);
    this.region?.release();
    this.region = undefined;
  }

  close(): void {
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
    this.region = this.createRegion();
    const region = this.region ? { path: this.region.path, bytes: this.region.byteLength } : undefined;
    stream.write(
      encodeOpen({ workerId: this.options.workerId, hostId: this.options.hostId, ...(region ? { region } : {}) }),
    );
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
    this.options.logger.info("LoRA stream opened", { server: serverId, transport: this.transport });
    return { stream, pending };
  }

  private createRegion(): SharedRegion | undefined {
    if (!this.options.sharedMemory || !SharedRegion.supported()) return undefined;
    try {
      return SharedRegion.create(this.options.workerId, this.options.sharedMemoryBytes ?? DEFAULT_SHARED_REGION_BYTES);
    } catch (err) {
      this.options.logger.warn("shared memory unavailable; using gRPC for activations", {
        error: (err as Error).message,
      });
      return undefined;
    }
  }
}
