/**
 * Disaggregated LoRA: each site's rows go to the LoRA server that holds their adapter, over one
 * Execute stream per server, or its shared-memory ring when the server is on this host
 * (`@loramesh/lora-wire` owns the stream, the rings and the codecs). This file only decides where
 * rows go, scatters and gathers them, and re-sends rows a server refused as "not resident" once the
 * placement names another holder.
 */
import { type Logger } from "@loramesh/core";
import { NotFoundError } from "@loramesh/errors";
import { type LoraBackend, type LoraSiteCall } from "@loramesh/engine";
import { siteShape, type ModelConfig } from "@loramesh/formats";
import { LoraStreamClient, type WireTransport } from "@loramesh/lora-wire";
import type { PlacementCache } from "@loramesh/mesh";
import { injectContext } from "@loramesh/telemetry";
import { ExecutorKind, type ExecutorInfo } from "@loramesh/proto";

export interface RemoteLoraOptions {
  config: ModelConfig;
  placement: PlacementCache;
  workerId: string;
  hostId: string;
  /** Use shared-memory rings with LoRA servers on this host. */
  sharedMemory: boolean;
  /** A round trip slower than this fails (a dead peer never hangs a step). */
  timeoutMs?: number;
  /** How long rows refused as "not resident" wait for the placement to name another holder. */
  replacementWaitMs?: number;
  logger: Logger;
}

const LORA_SERVER = ExecutorKind.EXECUTOR_KIND_LORA_SERVER;

export class RemoteLoraBackend implements LoraBackend {
  private readonly connections = new Map<string, { address: string; client: LoraStreamClient }>();
  private readonly placement: PlacementCache;

  /** Bytes of activations sent and deltas received, by transport. */
  readonly bytes = { shm: { sent: 0, received: 0 }, grpc: { sent: 0, received: 0 } };

  constructor(private readonly options: RemoteLoraOptions) {
    this.placement = options.placement;
  }

  has(adapterId: string): boolean {
    return this.placement.holdersOf(adapterId, LORA_SERVER).length > 0;
  }

  /** Transport used toward each connected server (for stats and tests). */
  transports(): Record<string, WireTransport> {
    return Object.fromEntries([...this.connections.entries()].map(([id, c]) => [id, c.client.transport]));
  }

  async apply(call: LoraSiteCall): Promise<void> {
    const rows: number[] = [];
    call.rowAdapter.forEach((a, r) => {
      if (a >= 0) rows.push(r); // rows without adapter go nowhere
    });
    await this.applyRows(call, rows, 0);
  }

  close(): void {
    for (const c of this.connections.values()) c.client.close();
    this.connections.clear();
  }

  /** Sends each server its rows, all servers at once. */
  private async applyRows(call: LoraSiteCall, rows: readonly number[], attempt: number): Promise<void> {
    await Promise.all(
      [...this.rowsByServer(call, rows).entries()].map(([serverId, serverRows]) =>
        this.applyOnServer(call, serverId, serverRows, attempt),
      ),
    );
  }

  private rowsByServer(call: LoraSiteCall, rows: readonly number[]): Map<string, number[]> {
    const byServer = new Map<string, number[]>();
    const serverOfAdapter = new Map<number, string>();
    for (const r of rows) {
      const a = call.rowAdapter[r] as number;
      let server = serverOfAdapter.get(a);
      if (server === undefined) {
        server = this.pick(call.adapters[a] as string).executorId;
        serverOfAdapter.set(a, server);
      }
      const list = byServer.get(server) ?? [];
      list.push(r);
      byServer.set(server, list);
    }
    return byServer;
  }

  /**
   * One server's rows. A server that answers "not resident" has just let the adapter go (a move's
   * drain ended before this worker saw the new placement): those rows wait for the next placement
   * update and go to the new holder, once.
   */
  private async applyOnServer(call: LoraSiteCall, serverId: string, rows: number[], attempt: number): Promise<void> {
    const { hIn, nOut } = siteShape(this.options.config, call.site);
    const server = this.placement.executors.get(serverId) as ExecutorInfo;
    const x = rows.length === call.rowAdapter.length ? call.x.data : gather(call.x.data, rows, hIn);
    const client = this.client(server);
    const epoch = this.placement.epoch;
    let delta: Float32Array;
    try {
      delta = await client.request({
        layer: call.layer,
        site: call.site,
        adapterIds: call.adapters,
        rowAdapter: rows.map((r) => call.rowAdapter[r] as number),
        rowExpert: call.rowExpert ? rows.map((r) => call.rowExpert?.[r] as number) : [],
        x,
        rows: rows.length,
        hIn,
        nOut,
        ...traceHeaders(),
      });
    } catch (err) {
      if (!(err instanceof NotFoundError) || attempt > 0) throw err;
      const moved = [...new Set(rows.map((r) => call.adapters[call.rowAdapter[r] as number] as string))];
      const leftServer = (): boolean =>
        this.placement.epoch > epoch &&
        moved.every((id) => this.placement.holdersOf(id, LORA_SERVER).every((h) => h.executorId !== serverId));
      await this.placement.until(leftServer, this.options.replacementWaitMs ?? 2_000);
      return this.applyRows(call, rows, attempt + 1);
    }
    const counted = this.bytes[client.transport];
    counted.sent += x.byteLength;
    counted.received += delta.byteLength;
    scatterAdd(call.y.data, delta, rows, nOut);
  }

  private pick(adapterId: string): ExecutorInfo {
    const holders = this.placement.holdersOf(adapterId, LORA_SERVER);
    if (holders.length === 0) throw new NotFoundError(`no LoRA server holds adapter ${adapterId}`);
    // Prefer same-host servers (shared memory). Among replicas of a hot adapter, each worker
    // keeps to one chosen by a hash of (worker, adapter): stable per worker, spread across workers.
    const sameHost = holders.filter((h) => h.hostId === this.options.hostId);
    const pool = (sameHost.length > 0 ? sameHost : holders).sort((a, b) => a.executorId.localeCompare(b.executorId));
    return pool[stableHash(`${this.options.workerId}/${adapterId}`) % pool.length] as ExecutorInfo;
  }

  private client(server: ExecutorInfo): LoraStreamClient {
    const known = this.connections.get(server.executorId);
    if (known && known.address === server.address) return known.client;
    known?.client.close();
    const client = new LoraStreamClient({
      serverId: server.executorId,
      address: server.address,
      workerId: this.options.workerId,
      hostId: this.options.hostId,
      sharedMemory: this.options.sharedMemory && server.hostId === this.options.hostId,
      ...(this.options.timeoutMs !== undefined ? { timeoutMs: this.options.timeoutMs } : {}),
      logger: this.options.logger,
    });
    this.connections.set(server.executorId, { address: server.address, client });
    return client;
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

/** y[rows[i]] += delta[i] for each of the server's rows. */
function scatterAdd(y: Float32Array, delta: Float32Array, rows: number[], nOut: number): void {
  rows.forEach((r, i) => {
    for (let n = 0; n < nOut; n++) y[r * nOut + n] = (y[r * nOut + n] as number) + (delta[i * nOut + n] as number);
  });
}
