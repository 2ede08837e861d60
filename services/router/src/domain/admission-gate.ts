/**
 * Admission control: how many requests the router runs at once, globally and per tenant, and what
 * happens to the rest. A request that finds no free slot waits in one bounded FIFO queue; when the
 * queue is full, or when its predicted time to first token (the measured wait per queue position
 * times its position, plus the measured service TTFT) exceeds the SLO, it is refused at once with
 * RESOURCE_EXHAUSTED and a retry hint instead of joining an unbounded backlog.
 */
import { CancelledError, DeadlineExceededError, ResourceExhaustedError } from "@loramesh/errors";
import type { SloClass } from "./types";

export interface AdmissionLimits {
  /** Requests running at once on this router; 0 = no limit. */
  maxInFlight: number;
  /** Requests one tenant may run at once; 0 = no limit. */
  tenantMaxInFlight: number;
  /** Requests that may wait for a slot; 0 = none wait (refused at once when no slot is free). */
  maxQueued: number;
  /** Time-to-first-token target a queued request must be predicted to meet. */
  sloTtftMs: number;
  /** Refuse when the predicted TTFT exceeds factor × target; 0 = never refuse on the SLO. */
  sloFactor: number;
}

export type AdmissionOutcome = "admitted" | "queued" | "rejected";
export type RejectReason = "queue-full" | "slo";

/** What admission did, for metrics and tests (counts, not timings). */
export interface AdmissionEvents {
  onOutcome(outcome: AdmissionOutcome, tenant: string, reason?: RejectReason): void;
}

export interface AdmissionCounts {
  admitted: number;
  queued: number;
  rejectedQueueFull: number;
  rejectedSlo: number;
  inFlight: number;
  waiting: number;
}

interface Waiter {
  tenant: string;
  grant: () => void;
  fail: (err: Error) => void;
}

/** Exponentially weighted mean; undefined until the first sample. */
class Ewma {
  value: number | undefined;
  constructor(private readonly alpha = 0.2) {}
  add(x: number): void {
    this.value = this.value === undefined ? x : this.value + this.alpha * (x - this.value);
  }
}

/** How long a refused client should wait when nothing has been measured yet. */
const DEFAULT_RETRY_MS = 1_000;

export class AdmissionGate {
  private running = 0;
  private readonly perTenant = new Map<string, number>();
  private readonly queue: Waiter[] = [];
  /** Slot grant → first token, measured on every request. */
  private readonly serviceTtft = new Ewma();
  /** Time between slot releases while requests waited: the queue's drain interval. */
  private readonly releaseGap = new Ewma();
  private lastRelease: number | undefined;
  private readonly counts: AdmissionCounts = {
    admitted: 0,
    queued: 0,
    rejectedQueueFull: 0,
    rejectedSlo: 0,
    inFlight: 0,
    waiting: 0,
  };

  constructor(
    private readonly limits: AdmissionLimits,
    private readonly events?: AdmissionEvents,
  ) {}

  /** Counts so far, and the slots and queue places in use now. */
  snapshot(): AdmissionCounts {
    return { ...this.counts, inFlight: this.running, waiting: this.queue.length };
  }

  /**
   * Takes a slot for the tenant: at once when one is free, else after waiting in the queue. Refused
   * (ResourceExhaustedError with `retryAfterMs`) when the queue is full or the SLO cannot be met.
   * Resolves with the slot's release; `control` aborts or expires the wait.
   */
  async acquire(
    tenant: string,
    sloClass: SloClass,
    control: { signal?: AbortSignal; deadline?: Date | number } = {},
  ): Promise<() => void> {
    // Waiters are granted as soon as slots allow, so any still queued are blocked: if this tenant
    // has a slot, it jumps no one who could run.
    if (this.free(tenant)) return this.take(tenant, "admitted");
    const { maxQueued, sloFactor, sloTtftMs } = this.limits;
    const position = this.queue.length + 1;
    const predicted = this.predictTtftMs(position);
    if (this.queue.length >= maxQueued) {
      this.reject(tenant, "queue-full");
      throw new ResourceExhaustedError(
        maxQueued === 0
          ? `the router is at its limit of requests in flight (${this.describeLimit(tenant)}); retry shortly`
          : `the router's admission queue is full (${maxQueued} waiting); retry shortly`,
        { retryAfterMs: this.retryAfterMs(position) },
      );
    }
    if (sloFactor > 0 && sloClass !== "batch" && predicted !== undefined && predicted > sloFactor * sloTtftMs) {
      this.reject(tenant, "slo");
      throw new ResourceExhaustedError(
        `the time to first token would be about ${Math.round(predicted)} ms, over the ${sloTtftMs} ms target; retry later`,
        { retryAfterMs: this.retryAfterMs(position) },
      );
    }
    return this.wait(tenant, control);
  }

  /** The first token of a request arrived `ms` after its slot was granted. */
  recordServiceTtft(ms: number): void {
    this.serviceTtft.add(ms);
  }

  /** Predicted TTFT at a queue position; undefined until the drain interval has been measured. */
  predictTtftMs(position: number): number | undefined {
    const gap = this.releaseGap.value;
    if (gap === undefined) return undefined;
    return position * gap + (this.serviceTtft.value ?? 0);
  }

  private retryAfterMs(position: number): number {
    const gap = this.releaseGap.value;
    return gap === undefined ? DEFAULT_RETRY_MS : Math.max(1, Math.ceil(position * gap));
  }

  private describeLimit(tenant: string): string {
    const { maxInFlight, tenantMaxInFlight } = this.limits;
    if (maxInFlight > 0 && this.running >= maxInFlight) return `${maxInFlight} on the router`;
    return `${tenantMaxInFlight} for tenant ${tenant}`;
  }

  private free(tenant: string): boolean {
    const { maxInFlight, tenantMaxInFlight } = this.limits;
    if (maxInFlight > 0 && this.running >= maxInFlight) return false;
    return tenantMaxInFlight <= 0 || (this.perTenant.get(tenant) ?? 0) < tenantMaxInFlight;
  }

  private reject(tenant: string, reason: RejectReason): void {
    if (reason === "queue-full") this.counts.rejectedQueueFull++;
    else this.counts.rejectedSlo++;
    this.events?.onOutcome("rejected", tenant, reason);
  }

  private take(tenant: string, outcome: "admitted" | "queued"): () => void {
    this.running++;
    this.perTenant.set(tenant, (this.perTenant.get(tenant) ?? 0) + 1);
    if (outcome === "admitted") {
      this.counts.admitted++;
      this.events?.onOutcome("admitted", tenant);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.running--;
      const left = (this.perTenant.get(tenant) ?? 1) - 1;
      if (left === 0) this.perTenant.delete(tenant);
      else this.perTenant.set(tenant, left);
      this.onRelease();
    };
  }

  private wait(tenant: string, control: { signal?: AbortSignal; deadline?: Date | number }): Promise<() => void> {
    this.counts.queued++;
    this.events?.onOutcome("queued", tenant);
    return new Promise<() => void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const cleanup = (): void => {
        if (timer) clearTimeout(timer);
        control.signal?.removeEventListener("abort", onAbort);
      };
      const leave = (err: Error): void => {
        const i = this.queue.indexOf(waiter);
        if (i < 0) return;
        this.queue.splice(i, 1);
        cleanup();
        reject(err);
      };
      const waiter: Waiter = {
        tenant,
        grant: () => {
          cleanup();
          resolve(this.take(tenant, "queued"));
        },
        fail: leave,
      };
      const onAbort = (): void => leave(new CancelledError("the request was cancelled while queued"));
      if (control.signal?.aborted) return reject(new CancelledError("the request was cancelled while queued"));
      control.signal?.addEventListener("abort", onAbort, { once: true });
      if (control.deadline !== undefined) {
        const ms = new Date(control.deadline).getTime() - Date.now();
        timer = setTimeout(() => leave(new DeadlineExceededError("the deadline passed while queued")), Math.max(0, ms));
      }
      this.queue.push(waiter);
    });
  }

  /** A slot came free: measure the drain interval and grant waiters in order, as slots allow. */
  private onRelease(): void {
    const now = performance.now();
    if (this.queue.length > 0 && this.lastRelease !== undefined) this.releaseGap.add(now - this.lastRelease);
    this.lastRelease = this.queue.length > 0 ? now : undefined;
    for (let i = 0; i < this.queue.length;) {
      const w = this.queue[i] as Waiter;
      if (!this.free(w.tenant)) {
        // Only this tenant is at its limit: later waiters of other tenants may go first.
        if (this.limits.maxInFlight > 0 && this.running >= this.limits.maxInFlight) return;
        i++;
        continue;
      }
      this.queue.splice(i, 1);
      w.grant();
    }
  }
}
