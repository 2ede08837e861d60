/**
 * Disaggregated LoRA: each site's rows go to the LoRA server that holds their adapter, over one
 * bidirectional stream per server. When the server is on this host, activations and deltas travel
 * through a shared-memory region and gRPC carries only the control message.
 */
import { randomBytes } from "node:crypto";
import { unlinkSync } from "node:fs";
import { credentials, type ClientDuplexStream } from "@grpc/grpc-js";
import { decodeTensor, encodeTensor, type Logger } from "@loramesh/core";
import { UnavailableError, NotFoundError } from "@loramesh/errors";
import { siteShape, type ModelConfig } from "@loramesh/formats";
import { type LoraBackend, type LoraSiteCall } from "@loramesh/engine";
import type { PlacementCache } from "@loramesh/mesh";
import { native } from "@loramesh/native";
import { injectContext } from "@loramesh/telemetry";
import {
  DType,
  ExecutorKind,
  LoraServerServiceClient,
  LoraSite,
  type ExecutorInfo,
  type LoraResult,
  type LoraStreamRequest,
} from "@loramesh/proto";

const SITE: Record<LoraSiteCall["site"], LoraSite> = {
  qkv: LoraSite.LORA_SITE_QKV,
  o: LoraSite.LORA_SITE_O,
  gate_up: LoraSite.LORA_SITE_GATE_UP,
  down: LoraSite.LORA_SITE_DOWN,
};

export interface RemoteLoraOptions {
  workerId: string;
  hostId: string;
  /** Use shared memory with LoRA servers on this host. */
  sharedMemory: boolean;
  /** Bytes of each shared region (half for activations, half for deltas). */
  sharedMemoryBytes?: number;
  /** A round trip slower than this fails (a dead peer never hangs a step). */
  timeoutMs?: number;
  /** How long rows refused as "not resident" wait for the placement to name another holder. */
  replacementWaitMs?: number;
  logger: Logger;
}

interface WorkRequest {
  layer: number;
  site: LoraSiteCall["site"];
  adapters: string[];
  rowAdapter: number[];
  rowExpert: number[];
  x: Float32Array;
  rows: number;
  hIn: number;
  nOut: number;
}

/** One stream to one LoRA server; requests are answered in order. */
class ServerConnection {
  private readonly client: LoraServerServiceClient;
  private stream: ClientDuplexStream<LoraStreamRequest, LoraResult> | undefined;
  private readonly waiting: Array<{
    resolve: (r: LoraResult) => void;
    reject: (e: Error) => void;
    timer: NodeJS.Timeout;
  }> = [];
  private region: Uint8Array | undefined;
  private regionPath: string | undefined;
  private lock: Promise<void> = Promise.resolve();
  private step = 0;

  constructor(
    readonly server: ExecutorInfo,
    private readonly options: RemoteLoraOptions,
  ) {
    this.client = new LoraServerServiceClient(server.address, credentials.createInsecure(), {
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
      "grpc.max_send_message_length": 64 * 1024 * 1024,
    });
  }

  get transport(): "shm" | "grpc" {
    return this.region ? "shm" : "grpc";
  }

  /** Sends one work item and resolves with its delta [rows, nOut]. */
  async request(work: WorkRequest): Promise<Float32Array> {
    // Shared memory is one region per connection: one request in flight at a time.
    const previous = this.lock;
    let release!: () => void;
    this.lock = new Promise((r) => (release = r));
    await previous;
    try {
      return await this.send(work);
    } finally {
      release();
    }
  }

  private async send(work: WorkRequest): Promise<Float32Array> {
    const stream = this.open();
    const half = this.region ? this.region.byteLength / 2 : 0;
    const useShm = this.region !== undefined && work.x.byteLength <= half && work.rows * work.nOut * 4 <= half;
    const base = {
      stepId: ++this.step,
      layer: work.layer,
      site: SITE[work.site],
      adapterIds: work.adapters,
      rowAdapter: work.rowAdapter,
      rowExpert: work.rowExpert,
      rowWeight: [],
      ...traceHeaders(),
    };
    let message: LoraStreamRequest;
    if (useShm && this.region) {
      new Float32Array(this.region.buffer, this.region.byteOffset, work.x.length).set(work.x);
      message = {
        kind: {
          $case: "work",
          value: {
            ...base,
            activations: {
              $case: "shared",
              value: { offset: 0, dtype: DType.DTYPE_F32, shape: [work.rows, work.hIn] },
            },
            resultOffset: half,
          },
        },
      };
    } else {
      message = {
        kind: {
          $case: "work",
          value: {
            ...base,
            activations: {
              $case: "inline",
              value: encodeTensor({ dtype: DType.DTYPE_F32, shape: [work.rows, work.hIn], data: work.x }),
            },
            resultOffset: 0,
          },
        },
      };
    }
    const result = await new Promise<LoraResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new UnavailableError(
            `LoRA server ${this.server.executorId} did not answer within ${this.options.timeoutMs ?? 30_000} ms`,
          ),
        );
        this.reset();
      }, this.options.timeoutMs ?? 30_000);
      this.waiting.push({ resolve, reject, timer });
      stream.write(message);
    });
    if (result.error !== "") {
      const Err = result.errorCode === 5 ? NotFoundError : UnavailableError;
      throw new Err(`LoRA server ${this.server.executorId}: ${result.error}`);
    }
    if (result.delta?.$case === "shared" && this.region) {
      return new Float32Array(
        this.region.buffer,
        this.region.byteOffset + result.delta.value.offset,
        work.rows * work.nOut,
      ).slice();
    }
    if (result.delta?.$case === "inline") {
      const t = decodeTensor(result.delta.value);
      if (t.dtype !== DType.DTYPE_F32 || t.data.length !== work.rows * work.nOut)
        throw new UnavailableError("LoRA server returned a delta of the wrong shape");
      return t.data;
    }
    throw new UnavailableError("LoRA server returned no delta");
  }

  private open(): ClientDuplexStream<LoraStreamRequest, LoraResult> {
    if (this.stream) return this.stream;
    const stream = this.client.execute();
    let shmName = "";
    let shmBytes = 0;
    if (this.options.sharedMemory && this.server.hostId === this.options.hostId && process.platform === "linux") {
      try {
        shmBytes = this.options.sharedMemoryBytes ?? 32 * 1024 * 1024;
        shmName = `/dev/shm/loramesh-${this.options.workerId}-${randomBytes(4).toString("hex")}`;
        this.region = new Uint8Array(native.mapSharedMemory(shmName, shmBytes, true));
        this.regionPath = shmName;
      } catch (err) {
        this.options.logger.warn("shared memory unavailable; using gRPC for activations", {
          error: (err as Error).message,
        });
        this.region = undefined;
        shmName = "";
        shmBytes = 0;
      }
    }
    stream.write({
      kind: {
        $case: "open",
        value: {
          workerId: this.options.workerId,
          hostId: this.options.hostId,
          sharedMemoryName: shmName,
          sharedMemoryBytes: shmBytes,
        },
      },
    });
    stream.on("data", (result: LoraResult) => {
      const next = this.waiting.shift();
      if (next) {
        clearTimeout(next.timer);
        next.resolve(result);
      }
    });
    const fail = (err?: Error): void => {
      if (this.stream !== stream) return;
      this.reset(
        new UnavailableError(
          `lost the LoRA stream to ${this.server.executorId} (${this.server.address}): ${err?.message ?? "closed"}`,
        ),
      );
    };
    stream.on("error", fail);
    stream.on("end", () => fail());
    this.stream = stream;
    this.options.logger.info("LoRA stream opened", { server: this.server.executorId, transport: this.transport });
    return stream;
  }

  /** Drops the stream (next request reopens it) and fails everything in flight. */
  reset(err: Error = new UnavailableError("LoRA stream reset")): void {
    const stream = this.stream;
    this.stream = undefined;
    stream?.cancel();
    for (const w of this.waiting.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.dropRegion();
  }

  close(): void {
    this.reset(new UnavailableError("worker shutting down"));
    this.client.close();
  }

  private dropRegion(): void {
    if (this.regionPath) {
      try {
        unlinkSync(this.regionPath);
      } catch {
        // already gone
      }
    }
    this.region = undefined;
    this.regionPath = undefined;
  }
}

export class RemoteLoraBackend implements LoraBackend {
  private readonly connections = new Map<string, ServerConnection>();

  constructor(
    private readonly config: ModelConfig,
    private readonly placement: PlacementCache,
    private readonly options: RemoteLoraOptions,
  ) {}

  has(adapterId: string): boolean {
    return this.placement.holdersOf(adapterId, ExecutorKind.EXECUTOR_KIND_LORA_SERVER).length > 0;
  }

  /** Bytes of activations sent and deltas received, by transport. */
  readonly bytes = { shm: { sent: 0, received: 0 }, grpc: { sent: 0, received: 0 } };

  /** Transport used toward each connected server (for stats and tests). */
  transports(): Record<string, "shm" | "grpc"> {
    return Object.fromEntries([...this.connections.entries()].map(([id, c]) => [id, c.transport]));
  }

  async apply(call: LoraSiteCall): Promise<void> {
    const rows: number[] = [];
    call.rowAdapter.forEach((a, r) => {
      if (a >= 0) rows.push(r); // rows without adapter go nowhere
    });
    await this.applyRows(call, rows, 0);
  }

  /**
   * Sends the rows to the servers holding their adapters. A server that answers "not resident"
   * has just let the adapter go (a move's drain ended before this worker saw the new placement):
   * those rows wait for the next placement update and go to the new holder, once.
   */
  private async applyRows(call: LoraSiteCall, rows: readonly number[], attempt: number): Promise<void> {
    const { hIn, nOut } = siteShape(this.config, call.site);
    const byServer = new Map<string, number[]>();
    const serverOfAdapter = new Map<number, ExecutorInfo>();
    for (const r of rows) {
      const a = call.rowAdapter[r] as number;
      let server = serverOfAdapter.get(a);
      if (!server) {
        server = this.pick(call.adapters[a] as string);
        serverOfAdapter.set(a, server);
      }
      const list = byServer.get(server.executorId) ?? [];
      list.push(r);
      byServer.set(server.executorId, list);
    }
    await Promise.all(
      [...byServer.entries()].map(async ([serverId, serverRows]) => {
        const server = this.placement.executors.get(serverId) as ExecutorInfo;
        const all = serverRows.length === call.rowAdapter.length;
        const x = all ? call.x.data : gather(call.x.data, serverRows, hIn);
        const connection = this.connection(server);
        const epoch = this.placement.epoch;
        let delta: Float32Array;
        try {
          delta = await connection.request({
            layer: call.layer,
            site: call.site,
            adapters: [...call.adapters],
            rowAdapter: serverRows.map((r) => call.rowAdapter[r] as number),
            rowExpert: call.rowExpert ? serverRows.map((r) => call.rowExpert?.[r] as number) : [],
            x,
            rows: serverRows.length,
            hIn,
            nOut,
          });
        } catch (err) {
          if (!(err instanceof NotFoundError) || attempt > 0) throw err;
          const moved = [...new Set(serverRows.map((r) => call.adapters[call.rowAdapter[r] as number] as string))];
          const leftServer = () =>
            this.placement.epoch > epoch &&
            moved.every((id) =>
              this.placement
                .holdersOf(id, ExecutorKind.EXECUTOR_KIND_LORA_SERVER)
                .every((h) => h.executorId !== serverId),
            );
          await this.placement.until(leftServer, this.options.replacementWaitMs ?? 2_000);
          return this.applyRows(call, serverRows, attempt + 1);
        }
        const moved = this.bytes[connection.transport];
        moved.sent += x.byteLength;
        moved.received += delta.byteLength;
        const y = call.y.data;
        serverRows.forEach((r, i) => {
          for (let n = 0; n < nOut; n++)
            y[r * nOut + n] = (y[r * nOut + n] as number) + (delta[i * nOut + n] as number);
        });
      }),
    );
  }

  close(): void {
    for (const c of this.connections.values()) c.close();
    this.connections.clear();
  }

  private pick(adapterId: string): ExecutorInfo {
    const holders = this.placement.holdersOf(adapterId, ExecutorKind.EXECUTOR_KIND_LORA_SERVER);
    if (holders.length === 0) throw new NotFoundError(`no LoRA server holds adapter ${adapterId}`);
    // Prefer same-host servers (shared memory). Among replicas of a hot adapter, each worker
    // keeps to one chosen by a hash of (worker, adapter): stable per worker, spread across workers.
    const sameHost = holders.filter((h) => h.hostId === this.options.hostId);
    const pool = (sameHost.length > 0 ? sameHost : holders).sort((a, b) => a.executorId.localeCompare(b.executorId));
    return pool[stableHash(`${this.options.workerId}/${adapterId}`) % pool.length] as ExecutorInfo;
  }

  private connection(server: ExecutorInfo): ServerConnection {
    let c = this.connections.get(server.executorId);
    if (c && c.server.address !== server.address) {
      c.close();
      c = undefined;
    }
    if (!c) {
      c = new ServerConnection(server, this.options);
      this.connections.set(server.executorId, c);
    }
    return c;
  }
}

/** The active trace context as the two W3C header values the LoRA work message carries. */
function traceHeaders(): { traceparent: string; tracestate: string } {
  const carrier = injectContext();
  return { traceparent: carrier["traceparent"] ?? "", tracestate: carrier["tracestate"] ?? "" };
}

/** FNV-1a, 32 bits: a stable spread of (worker, adapter) pairs over replicas. */
function stableHash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function gather(x: Float32Array, rows: number[], width: number): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((r, i) => out.set(x.subarray(r * width, (r + 1) * width), i * width));
  return out;
}

/**
 * Hybrid mode: rows whose adapter is resident on this worker run locally, the rest remotely; both
 * halves run at once and write disjoint rows.
 */
export class HybridLoraBackend implements LoraBackend {
  constructor(
    private readonly local: LoraBackend,
    private readonly remote: LoraBackend,
  ) {}

  has(adapterId: string): boolean {
    return this.local.has(adapterId) || this.remote.has(adapterId);
  }

  async apply(call: LoraSiteCall): Promise<void> {
    const isLocal = call.adapters.map((id) => this.local.has(id));
    const localRows = call.rowAdapter.map((a) => (a >= 0 && isLocal[a] ? a : -1));
    const remoteRows = call.rowAdapter.map((a) => (a >= 0 && !isLocal[a] ? a : -1));
    const jobs: Array<Promise<void>> = [];
    if (localRows.some((a) => a >= 0)) jobs.push(this.local.apply({ ...call, rowAdapter: Int32Array.from(localRows) }));
    if (remoteRows.some((a) => a >= 0))
      jobs.push(this.remote.apply({ ...call, rowAdapter: Int32Array.from(remoteRows) }));
    await Promise.all(jobs);
  }
}
