/**
 * A live copy of the provisioner's placement (executors and where each adapter is resident),
 * kept current through the WatchPlacement stream and re-subscribed when the stream breaks. While the
 * provisioner is away (restarting, or its Redis is), the last placement stays in use.
 */
import { credentials, type ClientReadableStream } from "@grpc/grpc-js";
import { clusterClientOptions, GRPC_CHANNEL_OPTIONS, type Logger } from "@loramesh/core";
import { ExecutorKind, ProvisionerServiceClient, type ExecutorInfo, type PlacementUpdate } from "@loramesh/proto";

export class PlacementCache {
  private readonly client: ProvisionerServiceClient;
  private stream: ClientReadableStream<PlacementUpdate> | undefined;
  private closed = false;
  private readyResolve!: () => void;
  /** Resolves after the first snapshot. */
  readonly ready = new Promise<void>((r) => (this.readyResolve = r));
  epoch = 0;
  executors = new Map<string, ExecutorInfo>();
  /** adapter id → executor ids where it is resident. */
  holders = new Map<string, string[]>();
  ranks = new Map<string, number>();
  /** adapter id → content hash of the weights placed. */
  contentHashes = new Map<string, string>();
  private listeners: Array<() => void> = [];

  constructor(
    provisionerAddress: string,
    private readonly logger: Logger,
  ) {
    this.client = new ProvisionerServiceClient(provisionerAddress, credentials.createInsecure(), {
      ...GRPC_CHANNEL_OPTIONS,
      ...clusterClientOptions(),
    });
    this.subscribe();
  }

  /** Called after every update. */
  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  executorsOf(kind: ExecutorKind): ExecutorInfo[] {
    return [...this.executors.values()].filter((e) => e.kind === kind);
  }

  /** Executors of a kind where the adapter is resident. */
  holdersOf(adapterId: string, kind: ExecutorKind): ExecutorInfo[] {
    return (this.holders.get(adapterId) ?? [])
      .map((id) => this.executors.get(id))
      .filter((e): e is ExecutorInfo => e !== undefined && e.kind === kind);
  }

  /** Waits until `check` holds (or the timeout passes); either way its listener is removed. */
  async until(check: () => boolean, timeoutMs: number): Promise<boolean> {
    if (check()) return true;
    return new Promise((resolve) => {
      const finish = (result: boolean): void => {
        clearTimeout(timer);
        this.listeners = this.listeners.filter((l) => l !== listener);
        resolve(result);
      };
      const timer = setTimeout(() => finish(false), timeoutMs);
      const listener = (): void => {
        if (check()) finish(true);
      };
      this.listeners.push(listener);
    });
  }

  /** Listeners registered now (onChange and pending until calls). */
  get listenerCount(): number {
    return this.listeners.length;
  }

  close(): void {
    this.closed = true;
    this.stream?.cancel();
    this.client.close();
  }

  private subscribe(): void {
    if (this.closed) return;
    const stream = this.client.watchPlacement({});
    this.stream = stream;
    stream.on("data", (update: PlacementUpdate) => this.apply(update));
    stream.on("error", () => undefined);
    stream.on("close", () => {
      if (this.closed) return;
      this.logger.debug("placement stream ended; resubscribing");
      setTimeout(() => this.subscribe(), 250).unref();
    });
  }

  private apply(update: PlacementUpdate): void {
    this.epoch = update.epoch;
    if (update.snapshot) {
      this.holders.clear();
      this.ranks.clear();
      this.contentHashes.clear();
    }
    for (const a of update.changed) {
      this.holders.set(a.adapterId, a.executorIds);
      this.ranks.set(a.adapterId, a.rank);
      this.contentHashes.set(a.adapterId, a.contentHash);
    }
    for (const id of update.removedAdapterIds) {
      this.holders.delete(id);
      this.contentHashes.delete(id);
    }
    this.executors = new Map(update.executors.map((e) => [e.executorId, e]));
    this.readyResolve();
    for (const l of [...this.listeners]) l();
  }
}
