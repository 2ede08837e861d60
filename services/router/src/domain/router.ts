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
import type { WorkerGateway, WorkerOutcome } from "../peers/worker-gateway";
import type { RouterMetrics } from "../router-metrics";
import { Admission } from "./admission";
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
  /** Most requests in flight; 0 = no limit. */
  maxInFlight?: number;
  logger: Logger;
}

interface Admitted {
  adapter: AdapterRecord | undefined;
  ids: number[];
  worker: WorkerInfo;
}

const NO_TIMINGS: Timings = { queueMs: 0, timePerOutputTokenMs: 0, totalMs: 0, timeToFirstTokenMs: 0 };

export class Router {
  private readonly admission: Admission;

  constructor(private readonly options: RouterOptions) {
    this.admission = new Admission({
      placement: options.placement,
      adapterWaitMs: options.adapterWaitMs,
      ...(options.routingSlack !== undefined ? { routingSlack: options.routingSlack } : {}),
      ...(options.maxInFlight !== undefined ? { maxInFlight: options.maxInFlight } : {}),
      onCold: (adapterId) => this.prefetch(adapterId),
    });
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
    const release = this.admission.reserve();
    try {
      return await this.dispatch(tenant, request, control);
    } finally {
      release();
    }
  }

  private async dispatch(
    tenant: string,
    request: GenerationRequest,
    control: GenerationControl,
  ): Promise<WorkerOutcome> {
    const { adapter, ids, worker } = await this.admit(tenant, request);
    const rank = adapter?.rank ?? 0;
    return this.admission.holding(worker.executorId, rank, () =>
      this.options.workers.submit(
        worker,
        {
          sequenceId: request.requestId,
          tenant,
          promptTokenIds: ids,
          adapterId: adapter?.adapterId ?? "",
          adapterRank: rank,
          sampling: request.sampling,
          sloClass: request.sloClass,
        },
        { ...control, onDelta: control.onDelta ?? (() => undefined) },
      ),
    );
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
          const worker = await this.admission.pickWorker(adapter?.adapterId, adapter?.rank ?? 0);
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

  registerAdapter(tenant: string, name: string, source: AdapterSourceRef | undefined): Promise<Registration> {
    return this.options.provisioner.registerAdapter(tenant, name, source);
  }

  listAdapters(tenant: string, pageSize: number, pageToken: string): Promise<AdapterPage> {
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
  getAdapter(tenant: string, name: string): Promise<AdapterRecord> {
    return this.options.provisioner.getAdapter(tenant, name);
  }

  deleteAdapter(tenant: string, name: string): Promise<void> {
    return this.options.provisioner.deleteAdapter(tenant, name);
  }

  watchAdapterLoad(
    tenant: string,
    name: string,
    control: { signal?: AbortSignal; deadline?: Date | number },
  ): AsyncGenerator<LoadJob> {
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
