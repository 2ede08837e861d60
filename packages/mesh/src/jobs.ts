/**
 * Adapter work as BullMQ jobs. Each executor consumes its own queue (`adapter-jobs.<executorId>`);
 * job ids are deterministic, so scheduling the same load twice is one job. A job that fails for a
 * reason retrying cannot fix (a malformed adapter) fails permanently.
 */
import { isLoraMeshError } from "@loramesh/errors";
import { type Logger } from "@loramesh/core";
import { extractContext, injectContext, SpanStatusCode, telemetry } from "@loramesh/telemetry";
import { Queue, QueueEvents, UnrecoverableError, Worker, type Job } from "bullmq";
import { redisOptionsFromUrl } from "./redis";

export type AdapterJobKind = "load" | "unload";

export interface AdapterJobData {
  kind: AdapterJobKind;
  adapterId: string;
  /** Adapter directory (load): the local source, or the registering host's cache entry. */
  dir: string;
  /** The remote source (hf://, s3://, http(s)://) it was registered from; absent or "" for a local path. */
  source?: string;
  /** Executors that held the adapter when the job was scheduled (load): fetched from before the source. */
  peers?: PeerRef[];
  /** Why a load was scheduled when not by placement ("prefetch": a router's hint). */
  reason?: string;
  contentHash: string;
  executorId: string;
  pin: boolean;
  /** W3C trace context of the request that scheduled the job (joins its trace). */
  traceContext?: Record<string, string>;
}

/** An executor another can fetch an adapter from. */
export interface PeerRef {
  executorId: string;
  address: string;
}

export const ADAPTER_JOB_ATTEMPTS = 4;

export function adapterQueueName(executorId: string): string {
  return `adapter-jobs.${executorId}`;
}

/**
 * Idempotent job id: one job per (kind, adapter version, executor, placement decision). The
 * decision's epoch is part of it so that loading again after an unload is a new job (BullMQ keeps
 * finished jobs for a while and would drop a second add with the same id).
 */
export function adapterJobId(kind: AdapterJobKind, adapterId: string, executorId: string, sequence = 0): string {
  return `${kind}-${adapterId}-${executorId}-${sequence}`.replace(/[^A-Za-z0-9_.-]/g, "_");
}

/** BullMQ options shared by every adapter job. */
export const ADAPTER_JOB_OPTIONS = {
  attempts: ADAPTER_JOB_ATTEMPTS,
  backoff: { type: "exponential", delay: 200 },
  removeOnComplete: { age: 3600, count: 1000 },
  removeOnFail: { age: 24 * 3600 },
} as const;

export interface AddJobOptions {
  /** The placement epoch of the decision (see adapterJobId). */
  sequence?: number;
  /** Run no earlier than this many ms from now (a drained source's unload). */
  delayMs?: number;
  /** Appended to the job id, so a job for another reason is not merged with placement's. */
  tag?: string;
}

export interface AdapterJobHandlers {
  /** Makes the adapter resident; reports progress in [0, 1]. */
  load(data: AdapterJobData, progress: (p: number) => Promise<void>): Promise<{ sizeBytes: number }>;
  unload(data: AdapterJobData): Promise<void>;
}

/** Consumes this executor's adapter jobs until closed. */
export function startAdapterJobWorker(
  redisUrl: string,
  executorId: string,
  handlers: AdapterJobHandlers,
  logger: Logger,
): Worker<AdapterJobData> {
  const worker = new Worker<AdapterJobData>(
    adapterQueueName(executorId),
    async (job: Job<AdapterJobData>) =>
      telemetry().tracer.startActiveSpan(
        `adapter.${job.data.kind}`,
        {
          attributes: {
            "loramesh.adapter": job.data.adapterId,
            "loramesh.executor": executorId,
            "messaging.system": "bullmq",
            "messaging.message.id": job.id ?? "",
            "loramesh.attempt": job.attemptsMade + 1,
          },
        },
        extractContext(job.data.traceContext),
        async (span) => {
          try {
            if (job.data.kind === "unload") {
              await handlers.unload(job.data);
              return { sizeBytes: 0 };
            }
            const result = await handlers.load(job.data, (p) => job.updateProgress(Math.round(p * 100) / 100));
            span.setAttribute("loramesh.adapter.bytes", result.sizeBytes);
            return result;
          } catch (err) {
            span.recordException(err as Error);
            span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
            // A bad adapter stays bad: do not retry it.
            if (isLoraMeshError(err) && err.kind === "invalid-argument") {
              throw new UnrecoverableError(err.message);
            }
            throw err;
          } finally {
            span.end();
          }
        },
      ),
    { connection: redisOptionsFromUrl(redisUrl), concurrency: 2 },
  );
  worker.on("failed", (job, err) =>
    logger.warn("adapter job failed", { jobId: job?.id, attempts: job?.attemptsMade, error: err.message }),
  );
  worker.on("error", (err) => logger.warn("adapter job worker error", { error: err.message }));
  return worker;
}

/** Producer side: queues per executor and their event streams, created on demand. */
export class AdapterJobQueues {
  private readonly queues = new Map<string, Queue<AdapterJobData>>();
  private readonly events = new Map<string, Promise<QueueEvents>>();

  constructor(private readonly redisUrl: string) {}

  queue(executorId: string): Queue<AdapterJobData> {
    let q = this.queues.get(executorId);
    if (!q) {
      q = new Queue<AdapterJobData>(adapterQueueName(executorId), { connection: redisOptionsFromUrl(this.redisUrl) });
      q.on("error", () => undefined); // connection errors surface on the calls that fail
      this.queues.set(executorId, q);
    }
    return q;
  }

  async add(data: AdapterJobData, options: AddJobOptions = {}): Promise<string> {
    const base = adapterJobId(data.kind, data.adapterId, data.executorId, options.sequence);
    const jobId = options.tag ? `${base}-${options.tag}` : base;
    await this.queue(data.executorId).add(
      data.kind,
      { ...data, traceContext: data.traceContext ?? injectContext() },
      { ...ADAPTER_JOB_OPTIONS, jobId, ...(options.delayMs ? { delay: options.delayMs } : {}) },
    );
    return jobId;
  }

  async job(executorId: string, jobId: string): Promise<Job<AdapterJobData> | undefined> {
    return (await this.queue(executorId).getJob(jobId)) ?? undefined;
  }

  /**
   * The job events of an executor's queue (progress, completed, failed, ...), shared by every
   * watcher; resolves once its connection listens, so no later event is missed. Closed by close().
   */
  queueEvents(executorId: string): Promise<QueueEvents> {
    let events = this.events.get(executorId);
    if (!events) {
      const e = new QueueEvents(adapterQueueName(executorId), { connection: redisOptionsFromUrl(this.redisUrl) });
      e.on("error", () => undefined); // a lost connection reconnects; watchers also wake on placement changes
      e.setMaxListeners(0); // one listener per open watch
      events = e.waitUntilReady().then(
        () => e,
        async (err: unknown) => {
          this.events.delete(executorId);
          await e.close().catch(() => undefined);
          throw err;
        },
      );
      this.events.set(executorId, events);
    }
    return events;
  }

  async close(): Promise<void> {
    const events = [...this.events.values()];
    this.events.clear();
    await Promise.all([
      ...[...this.queues.values()].map((q) => q.close()),
      ...events.map((e) => e.then((x) => x.close()).catch(() => undefined)),
    ]);
    this.queues.clear();
  }
}
