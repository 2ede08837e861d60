/* eslint-disable @typescript-eslint/unbound-method -- client methods are passed with their client to unary(), which re-binds them */
/**
 * Keeps an executor registered with the provisioner: registers, heartbeats at the interval the
 * provisioner asks for (with load, resident adapters and per-adapter traffic), re-registers when the
 * provisioner has forgotten it, and can beat at once when residency changes.
 */
import { createClient, type Logger } from "@loramesh/core";
import { DeadlineExceededError, UnavailableError } from "@loramesh/errors";
import {
  ProvisionerServiceClient,
  SERVICE_NAMES,
  type ExecutorInfo,
  type HeartbeatRequest,
  type ExecutorLoad,
  type HeartbeatResponse,
  type RegisterExecutorResponse,
  type ReportUnreachableRequest,
  type ReportUnreachableResponse,
} from "@loramesh/proto";
import { unary } from "./grpc-call";

export interface ExecutorState {
  load(): ExecutorLoad;
  residentAdapterIds(): string[];
  /** Requests per adapter since the last call (the agent resets by calling it). */
  takeAdapterRequests(): Record<string, number>;
}

/** How long one registration attempt waits for the provisioner before logging and asking again. */
const REGISTER_WAIT_MS = 5_000;

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
    // Heartbeats are idempotent (a beat replaces the last), so grpc-js may retry them on UNAVAILABLE.
    this.client = createClient(ProvisionerServiceClient, provisionerAddress, {
      service: SERVICE_NAMES.provisioner[0],
      retryMethods: ["RegisterExecutor", "Heartbeat"],
    });
  }

  /**
   * Registers and starts heartbeats. The registration waits for the provisioner to come up
   * (grpc-js waitForReady, with the channel's reconnect backoff) and is retried on UNAVAILABLE by
   * the channel's retry policy; each attempt ends at its deadline, and then we ask again.
   */
  async start(): Promise<void> {
    while (!this.registered && !this.stopped) {
      try {
        await this.register();
      } catch (err) {
        if (this.stopped) break;
        // Only "not there yet" is worth asking again; a refusal is final.
        if (!(err instanceof UnavailableError || err instanceof DeadlineExceededError)) throw err;
        this.logger.warn("cannot register with the provisioner yet", { error: err.message });
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

  /**
   * Tells the provisioner this executor cannot reach a LoRA server, so adapters with no other
   * target get a replica elsewhere. Best effort: a failed report is logged (the caller keeps
   * failing over, and reports again on its next failure).
   */
  async reportUnreachable(executorId: string, adapterIds: readonly string[]): Promise<string[]> {
    try {
      const res = await unary<ReportUnreachableRequest, ReportUnreachableResponse>(
        this.client.reportUnreachable,
        this.client,
        { reporterId: this.info.executorId, executorId, adapterIds: [...adapterIds] },
      );
      return res.loadJobIds;
    } catch (err) {
      this.logger.warn("could not report an unreachable LoRA server", {
        server: executorId,
        error: (err as Error).message,
      });
      return [];
    }
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
      { waitForReady: true, deadlineMs: REGISTER_WAIT_MS },
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
