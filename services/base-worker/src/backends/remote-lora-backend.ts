/**
 * Disaggregated LoRA: each site's rows go to the LoRA server that holds their adapter, over one
 * Execute stream per server, its shared-memory ring when the server is on this host, or a UCX
 * connection when it is on another (lora-transport.ts decides)
 * (`@loramesh/lora-wire` owns the stream, the rings and the codecs). This file only decides where
 * rows go, scatters and gathers them, and fails over: rows of a server that died or stopped
 * answering go to another holder (or wait for the adapter to be placed on a survivor), and rows a
 * server refused as "not resident" go to the next holder.
 *
 * Rings to same-host servers and UCX connections to other hosts' servers are also handed to the
 * native step (`stepSiteBackend`): the step's thread posts those sites itself, with no JavaScript per
 * site; the rest come back through `apply`. They are opened as soon as placement names a server this
 * worker would send rows to, not on the first request (`connectPlaced`).
 */
import { type Logger } from "@loramesh/core";
import { NotFoundError, UnavailableError } from "@loramesh/errors";
import { LoraAdaptersUnavailableError, type LoraBackend, type LoraSiteCall } from "@loramesh/engine";
import { siteShape, type ModelConfig } from "@loramesh/formats";
import { LoraStreamClient, type WireTransport } from "@loramesh/lora-wire";
import { native, nativeStep, type SiteBackendHandle } from "@loramesh/native";
import type { PlacementCache } from "@loramesh/mesh";
import { injectContext } from "@loramesh/telemetry";
import { ExecutorKind, type ExecutorInfo } from "@loramesh/proto";
import { transportFor, type TransportPolicy } from "./lora-transport";

export interface RemoteLoraOptions {
  config: ModelConfig;
  placement: PlacementCache;
  workerId: string;
  hostId: string;
  /** Use shared-memory rings with LoRA servers on this host. */
  sharedMemory: boolean;
  /** Which wire to try per server (default: the ring with same-host servers, else gRPC). */
  transport?: TransportPolicy;
  /** A round trip slower than this fails (a dead peer never hangs a step). */
  timeoutMs?: number;
  /** How long rows refused as "not resident" wait for the placement to name another holder. */
  replacementWaitMs?: number;
  /** How long one site may keep failing over (dead servers, re-placement) before it fails. */
  failoverMs?: number;
  /**
   * This worker cannot reach a server that held these adapters (a round trip timed out or its
   * link broke). The server may still heartbeat (a partition is not a death), so only the worker's
   * report makes the provisioner give those adapters a reachable replica.
   */
  onUnreachable?: (serverId: string, adapterIds: readonly string[]) => void;
  logger: Logger;
}

const LORA_SERVER = ExecutorKind.EXECUTOR_KIND_LORA_SERVER;

/** One server's share of a step: its adapters and the fast channel (ring or UCX) the step posts to. */
interface StepRoute {
  serverId: string;
  adapters: string[];
  backend: SiteBackendHandle;
  transport: "shm" | "ucx";
  /** The route as `nativeStep.routedSiteBackend` takes it. */
  native: { adapters: string[]; backend: SiteBackendHandle; timeoutMs: number; ring: boolean; ucx: boolean };
}

/** A connection's fast channel at one moment (undefined backend: none attached, or it closed). */
interface Channel {
  serverId: string;
  address: string;
  backend: SiteBackendHandle | undefined;
}

/** The native step backend over the cached routes, kept across steps while they hold. */
interface KeptStepBackend {
  routes: readonly StepRoute[];
  fallback: SiteBackendHandle;
  handle: SiteBackendHandle;
}

interface CachedRoutes {
  key: string;
  executors: PlacementCache["executors"];
  channels: readonly Channel[];
  until: number;
  routes: readonly StepRoute[];
}

/** What one site call may still spend on failover. */
interface Budget {
  deadline: number;
  notResidentRetries: number;
}

/** How long a server that failed a round trip is avoided while another holder exists. */
const SUSPECT_MS = 5_000;

export class RemoteLoraBackend implements LoraBackend {
  private readonly connections = new Map<string, { address: string; client: LoraStreamClient }>();
  private readonly placement: PlacementCache;
  /** serverId → until when it is avoided (it failed a round trip: dead, stopped or unreachable). */
  private readonly suspects = new Map<string, number>();
  /** serverId → adapters reported unreachable on it in its current suspect period (each once). */
  private readonly reported = new Map<string, Set<string>>();
  /** The rings and UCX connections each per-step native backend routes to (to know which broke when its step fails). */
  private readonly stepRings = new WeakMap<SiteBackendHandle, readonly StepRoute[]>();

  /**
   * The last step's routes (adapter → server channel), reused while nothing they were computed from
   * changed: the same adapters, placement (its executor map is replaced on every update), connections
   * and their fast channels, and no avoided server's period ended. Recomputing them cost a decode step
   * ~60 µs of the worker's event loop (measured, issue 13).
   */
  private routeCache: CachedRoutes | undefined;
  /**
   * The native routed backend over those routes, kept across steps: building it (and the step's
   * fallback) every step cost the worker's event loop ~40 µs a step (issue 13, m13g). Replaced when
   * the routes change, dropped when a server fails and at close.
   */
  private stepBackend: KeptStepBackend | undefined;

  /** Bytes of activations sent and deltas received, by transport. */
  readonly bytes = { shm: { sent: 0, received: 0 }, ucx: { sent: 0, received: 0 }, grpc: { sent: 0, received: 0 } };
  /** Site calls re-sent after a server failed (dead, stopped, refused as "not resident"). */
  failovers = 0;
  private closed = false;

  constructor(private readonly options: RemoteLoraOptions) {
    this.placement = options.placement;
    this.placement.onChange(() => this.connectPlaced());
    this.connectPlaced();
  }

  /**
   * True while the placement knows the adapter, even with no holder for the moment (its server
   * died and it is being placed again): the site waits for the new holder instead of failing.
   */
  has(adapterId: string): boolean {
    return this.placement.holdersOf(adapterId, LORA_SERVER).length > 0 || this.placement.holders.has(adapterId);
  }

  /** The hash placement names for the adapter (every holder verified it when loading). */
  contentHash(adapterId: string): string | undefined {
    return this.placement.contentHashes.get(adapterId) || undefined;
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
    if (rows.length === 0) return;
    const deadline = performance.now() + (this.options.failoverMs ?? 60_000);
    await this.applyRows(call, rows, { deadline, notResidentRetries: 0 });
  }

  /**
   * The step's native backend: each adapter whose chosen server has an attached ring (same host) or
   * UCX connection (another host) goes there from the step's thread; the rest (no fast channel yet)
   * use `fallback` (this `apply`). Undefined when no adapter of the step has a fast channel. This
   * backend keeps it (the caller must not dispose it) and hands the same one to the next step while
   * the routes and the fallback are the same.
   */
  stepSiteBackend(adapters: readonly string[], fallback: () => SiteBackendHandle): SiteBackendHandle | undefined {
    const routes = this.stepRoutes(adapters);
    if (routes.length === 0) return undefined;
    const fb = fallback();
    const kept = this.stepBackend;
    if (kept && kept.fallback === fb && (kept.routes === routes || sameRoutes(kept.routes, routes))) return kept.handle;
    const handle = nativeStep.routedSiteBackend(
      routes.map((r) => r.native),
      fb,
    );
    this.dropStepBackend();
    this.stepBackend = { routes, fallback: fb, handle };
    this.stepRings.set(handle, routes);
    return handle;
  }

  /** Releases the kept step backend (a step running on it keeps its own reference until it ends). */
  private dropStepBackend(): void {
    if (this.stepBackend) nativeStep.disposeSiteBackend(this.stepBackend.handle);
    this.stepBackend = undefined;
  }

  /** The step's routes: the cached ones while still valid, else computed (and cached) anew. */
  private stepRoutes(adapters: readonly string[]): readonly StepRoute[] {
    const key = adapters.join("\0");
    const channels = this.channels();
    const cached = this.routeCache;
    if (
      cached &&
      cached.key === key &&
      cached.executors === this.placement.executors &&
      performance.now() < cached.until &&
      sameChannels(cached.channels, channels)
    )
      return cached.routes;
    const routes = this.computeRoutes(adapters);
    // A server avoided now may be tried again when its period ends: recompute then.
    const now = performance.now();
    const until = Math.min(...[...this.suspects.values()].filter((t) => t > now), Infinity);
    this.routeCache = { key, executors: this.placement.executors, channels, until, routes };
    return routes;
  }

  private computeRoutes(adapters: readonly string[]): StepRoute[] {
    const routes = new Map<string, { adapters: string[]; backend: SiteBackendHandle; transport: "shm" | "ucx" }>();
    for (const id of adapters) {
      if (this.liveHolders(id).length === 0) continue;
      const server = this.pick(id);
      const known = this.connections.get(server.executorId);
      const channel = known?.address === server.address ? known.client.siteBackend : undefined;
      const transport = known?.client.transport;
      if (!channel || (transport !== "shm" && transport !== "ucx")) continue;
      const route = routes.get(server.executorId) ?? { adapters: [], backend: channel, transport };
      route.adapters.push(id);
      routes.set(server.executorId, route);
    }
    const timeoutMs = this.options.timeoutMs ?? 30_000;
    return [...routes.entries()].map(([serverId, r]) => ({
      serverId,
      adapters: r.adapters,
      backend: r.backend,
      transport: r.transport,
      native: {
        adapters: r.adapters,
        backend: r.backend,
        timeoutMs,
        ring: r.transport === "shm",
        ucx: r.transport === "ucx",
      },
    }));
  }

  /** Each connection's fast channel now, in the map's order. */
  private channels(): Channel[] {
    const out: Channel[] = [];
    for (const [serverId, c] of this.connections)
      out.push({ serverId, address: c.address, backend: c.client.siteBackend });
    return out;
  }

  /** A step on the rings or UCX failed at a site: a server whose channel broke is avoided, as after a failed round trip. */
  stepSiteFailed(backend: SiteBackendHandle, err: unknown): void {
    for (const { serverId, adapters, backend: channel, transport } of this.stepRings.get(backend) ?? []) {
      if (transport === "shm" ? native.shmCheck(channel) : native.ucxCheck(channel)) continue;
      this.failovers++;
      this.serverFailed(serverId, err instanceof Error ? err : new UnavailableError(String(err)), adapters);
    }
  }

  close(): void {
    this.closed = true;
    for (const c of this.connections.values()) c.client.close();
    this.connections.clear();
    this.routeCache = undefined;
    this.dropStepBackend();
  }

  /**
   * Opens the fast channel (ring or UCX) to each server this worker would send an adapter's rows to
   * now, so that no request pays the attach. Attached on first use instead, one worker's first sites
   * ran alone while another's attach was still under way (CI once saw a whole round in which one
   * worker finished before the other's ring was there, and nothing was batched).
   */
  private connectPlaced(): void {
    if (this.closed) return;
    // This runs inside the placement stream's handler: nothing may escape it (a request still
    // attaches on first use if this could not).
    const failed = (err: unknown): void =>
      this.options.logger.warn("could not open a LoRA fast channel ahead of requests", {
        error: (err as Error).message,
      });
    try {
      const servers = new Map<string, ExecutorInfo>();
      for (const adapterId of this.placement.holders.keys()) {
        if (this.liveHolders(adapterId).length === 0) continue;
        const server = this.pick(adapterId);
        servers.set(server.executorId, server);
      }
      for (const server of servers.values()) {
        const wire = this.wireFor(server);
        if (wire.sharedMemory || wire.ucx) this.client(server).connect().catch(failed);
      }
    } catch (err) {
      failed(err);
    }
  }

  /** Sends each server its rows, all servers at once. */
  private async applyRows(call: LoraSiteCall, rows: readonly number[], budget: Budget): Promise<void> {
    const byServer = await this.route(call, rows, budget);
    await Promise.all(
      [...byServer.entries()].map(([serverId, serverRows]) => this.applyOnServer(call, serverId, serverRows, budget)),
    );
  }

  /**
   * Rows by server. An adapter with no live holder (its servers died or stopped answering, and the
   * provisioner has not placed it on a survivor yet) waits for one, within the failover budget.
   */
  private async route(call: LoraSiteCall, rows: readonly number[], budget: Budget): Promise<Map<string, number[]>> {
    const ids = adapterIdsOf(call, rows);
    const missing = (): string | undefined => ids.find((id) => this.liveHolders(id).length === 0);
    for (let id = missing(); id !== undefined; id = missing()) {
      const left = budget.deadline - performance.now();
      if (left <= 0) {
        const gone = ids.filter((a) => this.liveHolders(a).length === 0);
        throw new LoraAdaptersUnavailableError(gone, `no live LoRA server holds adapter ${gone.join(", ")}`);
      }
      // Wake on a placement change, or when the earliest suspect may be tried again.
      const retryAt = Math.min(...[...this.suspects.values()].filter((t) => t > performance.now()), Infinity);
      await this.placement.until(() => missing() === undefined, Math.min(left, retryAt - performance.now() + 1));
    }
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
   * One server's rows. A server that fails the round trip (stream lost, no answer in time) is
   * avoided for a while and its rows go to another holder, or wait for the adapter to be placed
   * again. A server that answers "not resident" has just let the adapter go (a move's drain ended
   * before this worker saw the new placement): those rows wait for the next placement update and
   * go to the new holder, once.
   */
  private async applyOnServer(call: LoraSiteCall, serverId: string, rows: number[], budget: Budget): Promise<void> {
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
      this.suspects.delete(serverId);
    } catch (err) {
      if (err instanceof NotFoundError && budget.notResidentRetries === 0) {
        budget.notResidentRetries++;
        await this.untilMovedOff(call, rows, serverId, epoch);
      } else if (err instanceof UnavailableError && performance.now() < budget.deadline) {
        this.serverFailed(serverId, err, adapterIdsOf(call, rows));
      } else if (err instanceof UnavailableError) {
        throw new LoraAdaptersUnavailableError(adapterIdsOf(call, rows), err.message, { cause: err });
      } else throw err;
      this.failovers++;
      return this.applyRows(call, rows, budget);
    }
    const counted = this.bytes[client.transport];
    counted.sent += x.byteLength;
    counted.received += delta.byteLength;
    scatterAdd(call.y.data, delta, rows, nOut);
  }

  /** Waits (bounded) until a placement newer than `epoch` no longer names the server for the rows' adapters. */
  private async untilMovedOff(call: LoraSiteCall, rows: number[], serverId: string, epoch: number): Promise<void> {
    const moved = adapterIdsOf(call, rows);
    const leftServer = (): boolean =>
      this.placement.epoch > epoch &&
      moved.every((id) => this.placement.holdersOf(id, LORA_SERVER).every((h) => h.executorId !== serverId));
    await this.placement.until(leftServer, this.options.replacementWaitMs ?? 2_000);
  }

  /**
   * A failed round trip: avoid the server for a while and drop its channel, so that a restarted
   * server at the same address is reached at once (not after the old channel's reconnect backoff).
   */
  private serverFailed(serverId: string, err: Error, adapterIds: readonly string[]): void {
    const now = performance.now();
    this.routeCache = undefined;
    this.dropStepBackend();
    // Concurrent sites in flight to the server fail together: one strike (and one report) for them all.
    const fresh = (this.suspects.get(serverId) ?? 0) <= now;
    if (fresh) {
      this.options.logger.warn("LoRA server failed; re-sending its rows to another holder", {
        server: serverId,
        error: err.message,
      });
      this.suspects.set(serverId, now + SUSPECT_MS);
      this.reported.set(serverId, new Set());
    }
    const reported = this.reported.get(serverId) as Set<string>;
    const unreported = adapterIds.filter((id) => !reported.has(id));
    if (unreported.length > 0) {
      unreported.forEach((id) => reported.add(id));
      this.options.onUnreachable?.(serverId, unreported);
    }
    this.connections.get(serverId)?.client.close();
    this.connections.delete(serverId);
  }

  /** Holders of the adapter not avoided right now. */
  private liveHolders(adapterId: string): ExecutorInfo[] {
    const now = performance.now();
    return this.placement
      .holdersOf(adapterId, LORA_SERVER)
      .filter((h) => (this.suspects.get(h.executorId) ?? 0) <= now);
  }

  private pick(adapterId: string): ExecutorInfo {
    const holders = this.liveHolders(adapterId);
    if (holders.length === 0)
      throw new LoraAdaptersUnavailableError([adapterId], `no live LoRA server holds adapter ${adapterId}`);
    // Prefer same-host servers (shared memory). Among replicas of a hot adapter, each worker
    // keeps to one chosen by a hash of (worker, adapter): stable per worker, spread across workers.
    const sameHost = holders.filter((h) => h.hostId === this.options.hostId);
    const pool = (sameHost.length > 0 ? sameHost : holders).sort((a, b) => a.executorId.localeCompare(b.executorId));
    return pool[stableHash(`${this.options.workerId}/${adapterId}`) % pool.length] as ExecutorInfo;
  }

  /** Which fast channel to ask this server for (the stream is always the fallback). */
  private wireFor(server: ExecutorInfo): { sharedMemory: boolean; ucx: boolean } {
    const sameHost = server.hostId === this.options.hostId;
    const policy = this.options.transport ?? {
      choice: "shm",
      sharedMemory: this.options.sharedMemory,
      ucxAvailable: false,
    };
    const wire = transportFor({ ...policy, sharedMemory: policy.sharedMemory && this.options.sharedMemory }, sameHost);
    return { sharedMemory: wire === "shm", ucx: wire === "ucx" };
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
      ...this.wireFor(server),
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

function sameChannels(a: readonly Channel[], b: readonly Channel[]): boolean {
  return (
    a.length === b.length &&
    a.every((x, i) => x.serverId === b[i]?.serverId && x.address === b[i]?.address && x.backend === b[i]?.backend)
  );
}

/** The distinct adapter ids of the rows. */
function adapterIdsOf(call: LoraSiteCall, rows: readonly number[]): string[] {
  return [...new Set(rows.map((r) => call.adapters[call.rowAdapter[r] as number] as string))];
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

/** Whether two route lists send the same adapters to the same channels. */
function sameRoutes(a: readonly StepRoute[], b: readonly StepRoute[]): boolean {
  return (
    a.length === b.length &&
    a.every((r, i) => {
      const o = b[i] as StepRoute;
      return (
        r.serverId === o.serverId &&
        r.backend === o.backend &&
        r.transport === o.transport &&
        r.native.timeoutMs === o.native.timeoutMs &&
        r.adapters.length === o.adapters.length &&
        r.adapters.every((id, j) => id === o.adapters[j])
      );
    })
  );
}
