/**
 * Moving an adapter between executors without failing a request, as a BullMQ flow:
 *
 *   1. load   — a child job on the target's queue makes the adapter resident there;
 *   2. switch — the parent job, on the provisioners' `placement-moves` queue, waits until the target
 *               has reported the adapter resident, then in one Redis step takes the source out of
 *               the targets and marks it draining: from that epoch on, placement snapshots stop
 *               routing new work to the source while the target serves it;
 *   3. unload — a delayed job on the source's queue drops the adapter after the drain period, once
 *               work already sent to the source has finished.
 *
 * The source holds the adapter until step 3, so every request finds a holder throughout. When the
 * load fails for good the move is aborted: the target leaves the targets, the source stays.
 */
import type { Logger } from "@loramesh/core";
import {
  ADAPTER_JOB_OPTIONS,
  adapterJobId,
  adapterQueueName,
  redisOptionsFromUrl,
  type AdapterJobData,
  type AdapterJobQueues,
  type PeerRef,
} from "@loramesh/mesh";
import { injectContext } from "@loramesh/telemetry";
import { FlowProducer, Worker, type Job } from "bullmq";
import type { Move } from "./mesh-placement";
import type { PlacementStore } from "./placement-store";

export const MOVE_QUEUE = "placement-moves";

export interface MoveJobData extends Move {
  dir: string;
  contentHash: string;
}

export interface MoveAdapterInfo {
  id: string;
  dir: string;
  contentHash: string;
  /** Remote source URI, when registered from one. */
  source?: string;
}

/** Attempts of the switch job while waiting for the target's residency (≈ 250 ms apart). */
const SWITCH_ATTEMPTS = 120;

export class Migrations {
  private readonly flows: FlowProducer;
  private readonly worker: Worker<MoveJobData>;

  constructor(
    redisUrl: string,
    private readonly placement: PlacementStore,
    private readonly jobs: AdapterJobQueues,
    private readonly recordJob: (data: AdapterJobData, jobId: string) => Promise<void>,
    private readonly drainMs: number,
    private readonly logger: Logger,
  ) {
    this.flows = new FlowProducer({ connection: redisOptionsFromUrl(redisUrl) });
    this.flows.on("error", () => undefined);
    this.worker = new Worker<MoveJobData>(MOVE_QUEUE, (job) => this.switchRouting(job), {
      connection: redisOptionsFromUrl(redisUrl),
      concurrency: 4,
    });
    this.worker.on("error", (err) => logger.warn("move worker error", { error: err.message }));
    this.worker.on("failed", (job, err) => {
      if (job && job.attemptsMade >= (job.opts.attempts ?? 1)) void this.abort(job.data, err.message);
    });
  }

  /**
   * Schedules the move's jobs. The target must already be in the adapter's targets and the adapter
   * marked moving (one compare-and-set with the decision). Returns the switch job's id.
   */
  async start(move: Move, adapter: MoveAdapterInfo, sequence: number, peers: PeerRef[] = []): Promise<string> {
    const load: AdapterJobData = {
      kind: "load",
      adapterId: adapter.id,
      dir: adapter.dir,
      contentHash: adapter.contentHash,
      ...(adapter.source ? { source: adapter.source } : {}),
      peers,
      executorId: move.to,
      pin: false,
      traceContext: injectContext(),
    };
    const loadJobId = adapterJobId("load", adapter.id, move.to, sequence);
    const switchJobId = `move-${adapter.id}-${move.from}-${move.to}-${sequence}`.replace(/[^A-Za-z0-9_.-]/g, "_");
    await this.flows.add({
      name: "switch",
      queueName: MOVE_QUEUE,
      data: { ...move, dir: adapter.dir, contentHash: adapter.contentHash } satisfies MoveJobData,
      opts: {
        jobId: switchJobId,
        attempts: SWITCH_ATTEMPTS,
        backoff: { type: "fixed", delay: 250 },
        removeOnComplete: { age: 3600, count: 1000 },
        removeOnFail: { age: 24 * 3600 },
      },
      children: [
        {
          name: "load",
          queueName: adapterQueueName(move.to),
          data: load,
          // A load that fails for good still wakes the switch, which then aborts the move.
          opts: { ...ADAPTER_JOB_OPTIONS, jobId: loadJobId, ignoreDependencyOnFailure: true },
        },
      ],
    });
    await this.recordJob(load, loadJobId);
    this.logger.info("adapter move scheduled", { ...move, switchJobId });
    return switchJobId;
  }

  async close(): Promise<void> {
    await this.worker.close();
    await this.flows.close();
  }

  private async switchRouting(job: Job<MoveJobData>): Promise<{ epoch: number }> {
    const move = job.data;
    const failures = Object.values(await job.getIgnoredChildrenFailures());
    if (failures.length > 0) {
      await this.abort(move, failures.join("; "));
      return { epoch: await this.placement.epoch() };
    }
    // The load job finished; routing may switch once the target's heartbeat says so too, or
    // snapshots would briefly list no usable holder.
    if (!(await this.placement.holders(move.adapterId)).includes(move.to))
      throw new Error(`${move.to} has not reported ${move.adapterId} resident yet`);
    const epoch = await this.placement.switchRouting(move.adapterId, move.from);
    const unload: AdapterJobData = {
      kind: "unload",
      adapterId: move.adapterId,
      dir: move.dir,
      contentHash: move.contentHash,
      executorId: move.from,
      pin: false,
      traceContext: injectContext(),
    };
    await this.jobs.add(unload, { sequence: epoch, delayMs: this.drainMs });
    this.logger.info("adapter move switched routing", { ...move, epoch, drainMs: this.drainMs });
    return { epoch };
  }

  private async abort(move: MoveJobData, reason: string): Promise<void> {
    await this.placement.abortMove(move.adapterId, move.to).catch(() => undefined);
    this.logger.warn("adapter move aborted", { ...move, reason });
  }
}
