/* eslint-disable @typescript-eslint/unbound-method -- client methods are passed with their client to unary(), which re-binds them */
/**
 * The router: the public API. It authenticates the tenant, resolves the adapter within that tenant
 * (another tenant's adapter looks exactly like a missing one), tokenizes, picks a base worker that
 * can serve the adapter (least busy first), and streams tokens back, passing the client's deadline
 * and cancellation on to the worker.
 */
import { credentials, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import {
  CancelledError,
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  LoraMeshError,
  UnavailableError,
} from "@loramesh/errors";
import { fromServiceError, serverStreamHandler, unaryHandler, type Logger, type ServiceInstance } from "@loramesh/core";
import { Tokenizer } from "@loramesh/formats";
import { PlacementCache, unary } from "@loramesh/mesh";
import {
  AdapterServiceService,
  BaseWorkerServiceClient,
  ExecutorKind,
  FinishReason,
  InferenceServiceService,
  LoraMode,
  ProvisionerServiceClient,
  SERVICE_NAMES,
  type Adapter,
  type AdapterServiceServer,
  type ExecutorInfo,
  type GenerateRequest,
  type GenerateResponse,
  type InferenceServiceServer,
  type LoadJobStatus,
  type SequenceEvent,
  type SubmitSequenceRequest,
  type TenantListAdaptersResponse,
  type Timings,
  type TenantListAdaptersRequest,
  type TenantRegisterAdapterRequest,
  type TenantAdapterRequest,
  type TenantDeleteAdapterResponse,
  type TenantRegisterAdapterResponse,
} from "@loramesh/proto";
import { randomUUID } from "node:crypto";
import { chooseWorker, InFlightRanks } from "./worker-choice";
import { RouterMetrics, type SloTargets } from "./router-metrics";
import { Tenants } from "./tenants";
import { SpanStatusCode, telemetry } from "@loramesh/telemetry";

export interface RouterOptions {
  provisionerAddress: string;
  modelDir: string;
  tenants: Tenants;
  /** How long a request waits for a cold adapter to become resident. */
  adapterWaitMs: number;
  /** Extra in-flight requests a worker may have and still be preferred for rank grouping. */
  routingSlack?: number;
  /** Latency targets counted by the SLO-attainment metric. */
  slo: SloTargets;
  logger: Logger;
}

export function createRouterServices(options: RouterOptions): ServiceInstance {
  const { logger, tenants } = options;
  const tokenizer = Tokenizer.load(options.modelDir);
  const placement = new PlacementCache(options.provisionerAddress, logger);
  const provisioner = new ProvisionerServiceClient(options.provisionerAddress, credentials.createInsecure());
  const workers = new Map<string, BaseWorkerServiceClient>();
  const inFlight = new InFlightRanks();
  const metrics = new RouterMetrics(options.slo);

  const callProvisioner = <Req, Res>(method: Parameters<typeof unary<Req, Res>>[0], request: Req): Promise<Res> =>
    unary<Req, Res>(method, provisioner, request, { peer: "the provisioner" });

  const workerClient = (w: ExecutorInfo): BaseWorkerServiceClient => {
    let c = workers.get(w.address);
    if (!c) {
      c = new BaseWorkerServiceClient(w.address, credentials.createInsecure());
      workers.set(w.address, c);
    }
    return c;
  };

  /** Workers able to serve the adapter now: holding it locally, or using a LoRA server that holds it. */
  const candidates = (adapterId: string | undefined): ExecutorInfo[] => {
    const all = placement.executorsOf(ExecutorKind.EXECUTOR_KIND_BASE_WORKER);
    if (adapterId === undefined) return all;
    const localHolders = new Set(
      placement.holdersOf(adapterId, ExecutorKind.EXECUTOR_KIND_BASE_WORKER).map((e) => e.executorId),
    );
    const remoteOk = placement.holdersOf(adapterId, ExecutorKind.EXECUTOR_KIND_LORA_SERVER).length > 0;
    return all.filter((w) => localHolders.has(w.executorId) || (remoteOk && w.loraMode !== LoraMode.LORA_MODE_COUPLED));
  };

  const pickWorker = async (adapterId: string | undefined, rank: number): Promise<ExecutorInfo> => {
    await placement.ready;
    let options_ = candidates(adapterId);
    if (options_.length === 0 && adapterId !== undefined) {
      // A cold adapter: wait a little for its load to finish rather than failing at once.
      await placement.until(() => candidates(adapterId).length > 0, options.adapterWaitMs);
      options_ = candidates(adapterId);
      if (options_.length === 0)
        throw new FailedPreconditionError("the adapter is not loaded on any executor yet; retry shortly");
    }
    const localHolders = new Set(
      adapterId ? placement.holdersOf(adapterId, ExecutorKind.EXECUTOR_KIND_BASE_WORKER).map((e) => e.executorId) : [],
    );
    const chosen = chooseWorker(options_, inFlight, { rank, localHolders }, options.routingSlack);
    if (!chosen) throw new UnavailableError("no base worker is available");
    return chosen;
  };

  const resolveAdapter = async (tenant: string, name: string): Promise<Adapter | undefined> => {
    if (name === "") return undefined;
    return callProvisioner<TenantAdapterRequest, Adapter>(provisioner.getAdapter, { tenant, name });
  };

  const promptIds = (request: GenerateRequest): number[] => {
    const prompt = request.prompt;
    if (prompt?.$case === "tokenIds") return prompt.value.ids;
    if (prompt?.$case === "text") {
      const text = request.applyChatTemplate
        ? tokenizer.applyChatTemplate([{ role: "user", content: prompt.value }])
        : prompt.value;
      return tokenizer.encode(text);
    }
    throw new InvalidArgumentError("the prompt (text or token_ids) is required");
  };

  /** Runs one request on a worker, calling `onEvent` per streamed event; returns the last one. */
  /** `serve` with request metrics: outcome, TTFT and TPOT per adapter, SLO attainment. */
  const run = async (
    request: GenerateRequest,
    tenant: string,
    requestId: string,
    deadline: Date | number,
    onCancel: (cancel: () => void) => void,
    onEvent: (event: SequenceEvent) => void,
  ): Promise<{ last: SequenceEvent; timings: Timings }> => {
    const arrival = performance.now();
    let first: number | undefined;
    metrics.started();
    try {
      const last = await serve(request, tenant, requestId, deadline, onCancel, (event) => {
        if (event.tokenIds.length > 0) first ??= performance.now();
        onEvent(event);
      });
      metrics.finished(
        tenant,
        request.adapter,
        "ok",
        first !== undefined ? first - arrival : undefined,
        last.timings?.timePerOutputTokenMs,
      );
      // The worker's timings, with TTFT and total as the router (closer to the client) saw them.
      const now = performance.now();
      const timings: Timings = {
        ...(last.timings ?? { queueMs: 0, timePerOutputTokenMs: 0, totalMs: 0, timeToFirstTokenMs: 0 }),
        timeToFirstTokenMs: (first ?? now) - arrival,
        totalMs: now - arrival,
      };
      return { last, timings };
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
  };

  const serve = async (
    request: GenerateRequest,
    tenant: string,
    requestId: string,
    deadline: Date | number,
    onCancel: (cancel: () => void) => void,
    onEvent: (event: SequenceEvent) => void,
  ): Promise<SequenceEvent> => {
    // Admission: tenant, adapter, tokens, worker choice.
    const { adapter, ids, worker } = await telemetry().tracer.startActiveSpan(
      "router.admission",
      { attributes: { "loramesh.tenant": tenant, "loramesh.adapter": request.adapter } },
      async (span) => {
        try {
          const adapter = await resolveAdapter(tenant, request.adapter);
          const ids = promptIds(request);
          const worker = await pickWorker(adapter?.adapterId, adapter?.rank ?? 0);
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
    const submit: SubmitSequenceRequest = {
      sequenceId: requestId,
      tenant,
      promptTokenIds: ids,
      adapterId: adapter?.adapterId ?? "",
      adapterRank: adapter?.rank ?? 0,
      sampling: request.sampling,
      sloClass: request.sloClass,
      arrivalUnixMs: Date.now(),
    };
    inFlight.add(worker.executorId, submit.adapterRank);
    try {
      const call = workerClient(worker).submit(submit, new Metadata(), { deadline });
      onCancel(() => call.cancel());
      let last: SequenceEvent | undefined;
      for await (const event of call as AsyncIterable<SequenceEvent>) {
        onEvent(event);
        last = event;
      }
      if (!last) throw new UnavailableError("the worker ended the stream without a result");
      return last;
    } catch (err) {
      const e = err as Partial<ServiceError>;
      if (e.code === status.CANCELLED) throw new CancelledError("cancelled", { cause: err });
      if (e.code === status.DEADLINE_EXCEEDED)
        throw new DeadlineExceededError("the deadline passed before generation finished");
      throw fromServiceError(err, { peer: `worker ${worker.executorId}` });
    } finally {
      inFlight.remove(worker.executorId, submit.adapterRank);
    }
  };

  const inference: InferenceServiceServer = {
    generate: serverStreamHandler(logger, async (request, call) => {
      const tenant = tenants.resolve(call.metadata);
      const requestId = request.requestId || randomUUID();
      let cancelWorker: (() => void) | undefined;
      call.on("cancelled", () => cancelWorker?.());
      const { last, timings } = await run(
        request,
        tenant,
        requestId,
        call.getDeadline(),
        (c) => (cancelWorker = c),
        (event) => {
          if (event.finishReason !== FinishReason.FINISH_REASON_UNSPECIFIED) return;
          call.write({
            requestId,
            tokenIds: event.tokenIds,
            text: event.text,
            finishReason: 0,
          } satisfies Partial<GenerateResponse>);
        },
      );
      call.write({ requestId, tokenIds: [], text: "", finishReason: last.finishReason, usage: last.usage, timings });
    }),
    complete: unaryHandler(logger, async (request, call) => {
      const tenant = tenants.resolve(call.metadata);
      const requestId = request.requestId || randomUUID();
      const ids: number[] = [];
      let text = "";
      let cancelWorker: (() => void) | undefined;
      call.on("cancelled", () => cancelWorker?.());
      const { last, timings } = await run(
        request,
        tenant,
        requestId,
        call.getDeadline(),
        (c) => (cancelWorker = c),
        (event) => {
          ids.push(...event.tokenIds);
          text += event.text;
        },
      );
      return { requestId, tokenIds: ids, text, finishReason: last.finishReason, usage: last.usage, timings };
    }),
  };

  const adapters: AdapterServiceServer = {
    registerAdapter: unaryHandler(logger, async (request, call) => {
      const tenant = tenants.resolve(call.metadata);
      const res = await callProvisioner<TenantRegisterAdapterRequest, TenantRegisterAdapterResponse>(
        provisioner.registerAdapter,
        {
          tenant,
          name: request.name,
          source: request.source,
        },
      );
      return { adapter: res.adapter, loadJobIds: res.loadJobIds };
    }),
    listAdapters: unaryHandler(logger, async (request, call) => {
      const tenant = tenants.resolve(call.metadata);
      return callProvisioner<TenantListAdaptersRequest, TenantListAdaptersResponse>(provisioner.listAdapters, {
        tenant,
        pageSize: request.pageSize,
        pageToken: request.pageToken,
      });
    }),
    getAdapter: unaryHandler(logger, async (request, call) => {
      const tenant = tenants.resolve(call.metadata);
      return callProvisioner<TenantAdapterRequest, Adapter>(provisioner.getAdapter, { tenant, name: request.name });
    }),
    deleteAdapter: unaryHandler(logger, async (request, call) => {
      const tenant = tenants.resolve(call.metadata);
      await callProvisioner<TenantAdapterRequest, TenantDeleteAdapterResponse>(provisioner.deleteAdapter, {
        tenant,
        name: request.name,
      });
      return {};
    }),
    watchAdapterLoad: serverStreamHandler(logger, async (request, call) => {
      const tenant = tenants.resolve(call.metadata);
      const stream = provisioner.watchAdapterLoad({ tenant, name: request.name }, new Metadata(), {
        deadline: call.getDeadline(),
      });
      call.on("cancelled", () => stream.cancel());
      try {
        for await (const status_ of stream as AsyncIterable<LoadJobStatus>) call.write(status_);
      } catch (err) {
        throw fromServiceError(err, { peer: "the provisioner" });
      }
    }),
  };

  if (tenants.open) logger.info("no API keys configured: every call uses the default tenant");
  return {
    services: [
      { name: SERVICE_NAMES.router[0], definition: InferenceServiceService, implementation: inference },
      { name: SERVICE_NAMES.router[1], definition: AdapterServiceService, implementation: adapters },
    ],
    close: async () => {
      placement.close();
      provisioner.close();
      for (const c of workers.values()) c.close();
    },
  };
}
