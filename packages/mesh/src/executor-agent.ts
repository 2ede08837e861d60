/* eslint-disable @typescript-eslint/unbound-method -- client methods are passed with their client to unary(), which re-binds them */
/**
 * Keeps an executor registered with the provisioner: registers, heartbeats at the interval the
 * provisioner asks for (with load, resident adapters and per-adapter traffic), re-registers when the
 * provisioner has forgotten it, and can beat at once when residency changes.
 */
import { credentials } from "@grpc/grpc-js";
import type { Logger } from "@loramesh/core";
import {
  ProvisionerServiceClient,
  type ExecutorInfo,
  type HeartbeatRequest,
  type ExecutorLoad,
  type HeartbeatResponse,
  type RegisterExecutorResponse,
} from "@loramesh/proto";
import { unary } from "./grpc-call";

export interface ExecutorState {
  load(): ExecutorLoad;
  residentAdapterIds(): string[];
  /** Requests per adapter since the last call (the agent resets by calling it). */
  takeAdapterRequests(): Record<string, number>;
}

export class ExecutorAgent {
  private readonly client: ProvisionerServiceClient;
  private timer: NodeJS.Timeout | undefined;
  private intervalMs = 1_000;
  private registered = false;
  private stopped = false;
  private beating: Promise<void> | undefined;

  constructor(
    provisionerAddress: string,
    private readonly info: ExecutorInfo,
    private readonly state: ExecutorState,
    private readonly logger: Logger,
  ) {
    this.client = new ProvisionerServiceClient(provisionerAddress, credentials.createInsecure());
  }

  /** Registers (retrying until the provisioner answers) and starts heartbeats. */
  async start(): Promise<void> {
    for (let attempt = 0; !this.registered && !this.stopped; attempt++) {
      try {
        await this.register();
      } catch (err) {
        if (attempt % 10 === 0)
          this.logger.warn("cannot register with the provisioner yet", { error: (err as Error).message });
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    this.schedule();
  }

  /** Sends a heartbeat now (after a load, unload or eviction). */
  beatNow(): Promise<void> {
    this.beating ??= this.beat().finally(() => {
      this.beating = undefined;
    });
    return this.beating;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.client.close();
  }

  private async register(): Promise<void> {
    const res = await unary<{ executor: ExecutorInfo }, RegisterExecutorResponse>(
      this.client.registerExecutor,
      this.client,
      { executor: this.info },
    );
    this.intervalMs = Math.max(100, res.heartbeatIntervalMs);
    this.registered = true;
    this.logger.info("registered with the provisioner", { executorId: this.info.executorId });
    await this.beat();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.beatNow().finally(() => this.schedule());
    }, this.intervalMs);
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    if (this.stopped) return;
    const requests = this.state.takeAdapterRequests();
    try {
      const res = await unary<HeartbeatRequest, HeartbeatResponse>(this.client.heartbeat, this.client, {
        executorId: this.info.executorId,
        load: this.state.load(),
        residentAdapterIds: this.state.residentAdapterIds(),
        adapterRequests: requests,
      });
      if (!res.known) {
        this.registered = false;
        await this.register();
      }
    } catch (err) {
      this.logger.warn("heartbeat failed", { error: (err as Error).message });
    }
  }
}
