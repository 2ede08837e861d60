/**
 * The router's domain: a tenant's generation (adapter resolved within the tenant, prompt encoded,
 * worker chosen, tokens streamed back, cancellation passed on) and the tenant's adapter registry.
 * Both the gRPC and the HTTP handlers call this object; it knows no wire format.
 */
import { type Logger } from "@loramesh/core";
import { FailedPreconditionError, InvalidArgumentError, LoraMeshError, UnavailableError } from "@loramesh/errors";
import { SpanStatusCode, telemetry } from "@loramesh/telemetry";
import type { PlacementView, WorkerInfo } from "../peers/placement-view";
import type { ProvisionerGateway, Registration } from "../peers/provisioner-gateway";
import { WorkerLostError, type WorkerGateway, type WorkerOutcome } from "../peers/worker-gateway";
import type { RouterMetrics } from "../router-metrics";
import { Admission } from "./admission";
import { Continuation } from "./continuation";
import { checkAdapterCallLimits, checkRequestLimits } from "./request-limits";
import { AdmissionGate, type AdmissionEvents, type AdmissionLimits } from "./admission-gate";
import type { PromptEncoder } from "./prompt-encoder";
import type {
  AdapterPage,
  AdapterRecord,
  GenerationControl,
  GenerationRequest,
  GenerationResult,
  AdapterSourceRef,
  LoadJob,
  Timings,
} from "./types";

export interface RouterOptions {
  provisioner: ProvisionerGateway;
  placement: PlacementView;
  workers: WorkerGateway;
  prompts: PromptEncoder;
  metrics: RouterMetrics;
  /** How long a request waits for a cold adapter to become resident. */
  adapterWaitMs: number;
  /** Extra in-flight requests a worker may have and still be preferred for rank grouping. */
  routingSlack?: number;
  /** Most requests in flight; 0 = no limit (also `limits.maxInFlight`). */
  maxInFlight?: number;
  /** In-flight limits, the queue's bound and SLO-based refusal (defaults: none of them). */
  limits?: Partial<AdmissionLimits>;
  /** Told each admission outcome (metrics). */
  admissionEvents?: AdmissionEvents;
  logger: Logger;
}

interface Admitted {
  adapter: AdapterRecord | undefined;
  ids: number[];
  worker: WorkerInfo;
}

/** Resubmissions of one request before it fails (each after losing a worker). */
const MAX_TAKEOVERS = 3;

const NO_TIMINGS: Timings = { queueMs: 0, timePerOutputTokenMs: 0, totalMs: 0, timeToFirstTokenMs: 0 };

export class Router {
  private readonly admission: Admission;
  /** How many requests run at once, and what happens to the rest. */
  readonly gate: AdmissionGate;

  constructor(private readonly options: RouterOptions) {
    this.admission = new Admission({
      placement: options.placement,
      adapterWaitMs: options.adapterWaitMs,
      ...(options.routingSlack !== undefined ? { routingSlack: options.routingSlack } : {}),
      onCold: (adapterId) => this.prefetch(adapterId),
    });
    const limits = options.limits ?? {};
    this.gate = new AdmissionGate(
      {
        maxInFlight: limits.maxInFlight ?? options.maxInFlight ?? 0,
        tenantMaxInFlight: limits.tenantMaxInFlight ?? 0,
        maxQueued: limits.maxQueued ?? 0,
        sloTtftMs: limits.sloTtftMs ?? options.metrics.targets.ttftMs,
        sloFactor: limits.sloFactor ?? 1,
      },
      options.admissionEvents,
    );
  }

  /**
   * Prefetch: a request for an adapter no executor holds was admitted; the provisioner starts its
   * load now. A hint only: the request waits on placement as before, and a failed hint is logged.
   */
  private prefetch(adapterId: string): void {
    this.options.provisioner.prefetchAdapter(adapterId).then(
      (jobs) => {
        if (jobs.length > 0) this.options.logger.info("prefetch started loads", { adapterId, jobs });
      },
      (err: unknown) => this.options.logger.warn("prefetch hint failed", { adapterId, error: (err as Error).message }),
    );
  }

  /** One token's text (for log-probability listings). */
  tokenText(id: number): string {
    return this.options.prompts.tokenText(id);
  }

  /** Runs one generation for the tenant, with request metrics (outcome, TTFT, TPOT, SLO). */
  async generate(tenant: string, request: GenerationRequest, control: GenerationControl): Promise<GenerationResult> {
    // Before anything else: an oversize or malformed request costs nothing but this check.
    checkRequestLimits(request);
    const { metrics } = this.options;
    const arrival = performance.now();
    let first: number | undefined;
    metrics.started();
    try {
      const last = await this.serve(tenant, request, {
        ...control,
        onDelta: (delta) => {
          if (delta.tokenIds.length > 0) first ??= performance.now();
          control.onDelta?.(delta);
        },
      });
      const ttft = first !== undefined ? first - arrival : undefined;
      metrics.finished(tenant, request.adapter, "ok", ttft, last.timings?.timePerOutputTokenMs);
      // The worker's timings, with TTFT and total as the router (closer to the client) saw them.
      const now = performance.now();
      return {
        requestId: request.requestId,
        finishReason: last.finishReason,
        usage: last.usage ?? { promptTokens: 0, completionTokens: 0 },
        timings: {
          ...(last.timings ?? NO_TIMINGS),
          timeToFirstTokenMs: (first ?? now) - arrival,
          totalMs: now - arrival,
        },
      };
    } catch (err) {
      metrics.finished(
        tenant,
        request.adapter,
        err instanceof LoraMeshError ? err.kind : "internal",
        undefined,
        undefined,
      );
      throw err;
    }
  }

  private async serve(tenant: string, request: GenerationRequest, control: GenerationControl): Promise<WorkerOutcome> {
    const release = await this.gate.acquire(tenant, request.sloClass, control);
    const granted = performance.now();
    let first = true;
    try {
      return await this.dispatch(tenant, request, {
        ...control,
        onDelta: (delta) => {
          if (first && delta.tokenIds.length > 0) {
            first = false;
            this.gate.recordServiceTtft(performance.now() - granted);
          }
          control.onDelta?.(delta);
        },
      });
    } finally {
      release();
    }
  }

  /**
   * Runs the request on a worker. A worker lost on the way (it died or stopped answering) is left
   * out at once, and the request goes to another worker: from the start when nothing was streamed,
   * else as prompt + tokens already sent, continuing the same client stream.
   */
  private async dispatch(
    tenant: string,
    request: GenerationRequest,
    control: GenerationControl,
  ): Promise<WorkerOutcome> {
    const admitted = await this.admit(tenant, request);
    const { adapter, ids } = admitted;
    const rank = adapter?.rank ?? 0;
    const continuation = new Continuation(
      ids,
      request.sampling,
      (t) => this.options.prompts.decode(t),
      request.resumeTokenIds,
    );
    if (continuation.exhausted) return continuation.finishedByBudget();
    const onDelta = control.onDelta ?? (() => undefined);
    let worker = admitted.worker;
    for (let takeovers = 0; ; takeovers++) {
      try {
        const outcome = await this.admission.holding(worker.executorId, rank, () =>
          this.options.workers.submit(
            worker,
            {
              // Scoped by tenant: another tenant's equal request_id never names this sequence.
              sequenceId: workerSequenceId(tenant, request.requestId),
              tenant,
              ...continuation.sequence(),
              adapterId: adapter?.adapterId ?? "",
              adapterRank: rank,
              sloClass: request.sloClass,
            },
            { ...control, onDelta: (delta) => continuation.forward(delta, onDelta) },
          ),
        );
        return continuation.outcome(outcome);
      } catch (err) {
        if (!(err instanceof WorkerLostError) || control.signal?.aborted) throw err;
        this.admission.workerLost(worker.executorId);
        if (takeovers >= MAX_TAKEOVERS)
          throw new UnavailableError(`${err.message}; gave up after ${takeovers} resubmissions`, { cause: err });
        if (continuation.exhausted) return continuation.finishedByBudget();
        continuation.takeover();
        worker = await this.admission.pickWorker(adapter?.adapterId, rank);
        this.options.metrics.resubmitted();
        this.options.logger.warn("worker lost; request resubmitted", {
          requestId: request.requestId,
          lost: err.workerId,
          to: worker.executorId,
          tokensSent: continuation.tokensSent,
        });
      }
    }
  }

  /** Admission: tenant, adapter, tokens, worker choice, inside one span. */
  private async admit(tenant: string, request: GenerationRequest): Promise<Admitted> {
    return telemetry().tracer.startActiveSpan(
      "router.admission",
      { attributes: { "loramesh.tenant": tenant, "loramesh.adapter": request.adapter } },
      async (span) => {
        try {
          const adapter = request.adapter === "" ? undefined : await this.getAdapter(tenant, request.adapter);
          const ids = this.options.prompts.encode(request.prompt);
          const worker = await this.admission.pickWorker(adapter?.adapterId, adapter?.rank ?? 0).catch((err) => {
            // A ready adapter nobody can serve now lost its executors: unavailable, not a cold adapter.
            if (err instanceof FailedPreconditionError && adapter?.state === "ready")
              throw new UnavailableError(`no live executor holds adapter ${request.adapter}; retry shortly`);
            throw err;
          });
          span.setAttributes({
            "loramesh.worker": worker.executorId,
            "loramesh.prompt_tokens": ids.length,
            "loramesh.rank": adapter?.rank ?? 0,
          });
          return { adapter, ids, worker };
        } catch (err) {
          span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
          throw err;
        } finally {
          span.end();
        }
      },
    );
  }

  /** `deadline`: the caller's; a remote source's download is bounded by it (else by 10 minutes). */
  async registerAdapter(
    tenant: string,
    name: string,
    source: AdapterSourceRef | undefined,
    deadline?: Date | number,
  ): Promise<Registration> {
    checkAdapterCallLimits({ name, source: source && ("uri" in source ? source.uri : source.localDir) });
    return this.options.provisioner.registerAdapter(tenant, name, source, deadline);
  }

  async listAdapters(tenant: string, pageSize: number, pageToken: string): Promise<AdapterPage> {
    checkAdapterCallLimits({ pageToken });
    return this.options.provisioner.listAdapters(tenant, pageSize, pageToken);
  }

  /** Every adapter of the tenant, all pages. */
  async allAdapters(tenant: string): Promise<AdapterRecord[]> {
    const all: AdapterRecord[] = [];
    let token = "";
    do {
      const page = await this.listAdapters(tenant, 0, token);
      all.push(...page.adapters);
      token = page.nextPageToken;
    } while (token !== "");
    return all;
  }

  /** The tenant's adapter; another tenant's adapter is NotFound exactly like a missing one. */
  async getAdapter(tenant: string, name: string): Promise<AdapterRecord> {
    checkAdapterCallLimits({ name });
    return this.options.provisioner.getAdapter(tenant, name);
  }

  async deleteAdapter(tenant: string, name: string): Promise<void> {
    checkAdapterCallLimits({ name });
    return this.options.provisioner.deleteAdapter(tenant, name);
  }

  watchAdapterLoad(
    tenant: string,
    name: string,
    control: { signal?: AbortSignal; deadline?: Date | number },
  ): AsyncGenerator<LoadJob> {
    checkAdapterCallLimits({ name });
    return this.options.provisioner.watchAdapterLoad(tenant, name, control);
  }

  /** Registers an adapter and waits until a worker can serve it; a failed load is the adapter's error. */
  async loadAdapter(
    tenant: string,
    name: string,
    source: AdapterSourceRef,
    signal?: AbortSignal,
  ): Promise<AdapterRecord> {
    await this.registerAdapter(tenant, name, source);
    for await (const _ of this.watchAdapterLoad(tenant, name, signal ? { signal } : {})) void _;
    const adapter = await this.getAdapter(tenant, name);
    if (adapter.state === "failed") throw new InvalidArgumentError(`adapter ${name} failed to load: ${adapter.error}`);
    if (adapter.state !== "ready") throw new FailedPreconditionError(`adapter ${name} is ${adapter.state}`);
    if (!(await this.options.placement.untilServable(adapter.adapterId, this.options.adapterWaitMs)))
      throw new UnavailableError(`adapter ${name} is loaded but no base worker can serve it yet`);
    return adapter;
  }
}

/** The worker's id for a tenant's request: tenant and request id, so tenants never collide. */
export function workerSequenceId(tenant: string, requestId: string): string {
  return `${tenant}/${requestId}`;
}
