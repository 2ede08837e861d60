/**
 * Following an adapter's load jobs as they change, driven by events rather than polling: BullMQ
 * QueueEvents of every executor queue that holds one of its jobs, and placement changes (new jobs,
 * and the heartbeat that reports a finished load resident).
 */
import type { AdapterJobQueues } from "@loramesh/mesh";
import type { QueueEvents } from "bullmq";
import { jobEnded, type JobView } from "./job-view";
import type { PlacementChanges } from "./placement-changes";

export interface LoadWatchDeps {
  jobs: AdapterJobQueues;
  changes: PlacementChanges;
  /** The adapter's load jobs now. */
  statuses: () => Promise<JobView[]>;
  /** Whether some executor has reported the adapter resident. */
  resident: () => Promise<boolean>;
  /** How long a finished load may wait for the heartbeat that reports it resident. */
  heartbeatTtlMs: number;
  /** Longest a watch runs. */
  maxMs?: number;
}

const JOB_EVENTS = ["waiting", "delayed", "active", "progress", "completed", "failed"] as const;

/** A wake-up signal: `wait` resolves at the next `poke` (or at once when one is pending). */
class Wakeup {
  private pending = true;
  private resolve: (() => void) | undefined;

  poke = (): void => {
    this.pending = true;
    this.resolve?.();
  };

  async wait(): Promise<void> {
    if (!this.pending) await new Promise<void>((r) => (this.resolve = r));
    this.resolve = undefined;
    this.pending = false;
  }
}

/**
 * Writes each job's status whenever it changes, until every job has ended (and a finished load is
 * resident, or the heartbeat TTL passed), `isCancelled` holds, or `maxMs` passes.
 */
export async function watchLoad(
  deps: LoadWatchDeps,
  write: (status: JobView) => void,
  onCancel: (cancel: () => void) => void,
): Promise<void> {
  const wake = new Wakeup();
  let stopped = false;
  const stop = (): void => {
    stopped = true;
    wake.poke();
  };
  onCancel(stop);
  const timers = [setTimeout(stop, deps.maxMs ?? 10 * 60_000)];
  const unsubscribe = deps.changes.subscribe(wake.poke);
  const watched = new Map<string, QueueEvents>();
  const jobIds = new Set<string>();
  const onJob = ({ jobId }: { jobId: string }): void => {
    if (jobIds.has(jobId)) wake.poke();
  };
  const seen = new Map<string, string>();
  let endedSince: number | undefined;
  try {
    for (;;) {
      await wake.wait();
      if (stopped) return;
      const statuses = await deps.statuses();
      for (const s of statuses) {
        jobIds.add(s.jobId);
        const key = JSON.stringify(s);
        if (seen.get(s.jobId) !== key) {
          seen.set(s.jobId, key);
          write(s);
        }
        if (!watched.has(s.executorId)) {
          const events = await deps.jobs.queueEvents(s.executorId);
          watched.set(s.executorId, events);
          for (const name of JOB_EVENTS) events.on(name, onJob);
          wake.poke(); // the job may have moved before we listened
        }
      }
      if (!statuses.every(jobEnded)) continue;
      // A finished load counts once the executor's heartbeat has reported the adapter resident,
      // so that READY follows the stream's end (bounded: a lost heartbeat does not hang it).
      const loaded = statuses.some((s) => s.phase === "completed");
      if (endedSince === undefined) {
        endedSince = Date.now();
        timers.push(setTimeout(wake.poke, deps.heartbeatTtlMs + 1));
      }
      if (!loaded || (await deps.resident()) || Date.now() - endedSince > deps.heartbeatTtlMs) return;
    }
  } finally {
    for (const t of timers) clearTimeout(t);
    unsubscribe();
    for (const events of watched.values()) for (const name of JOB_EVENTS) events.off(name, onJob);
  }
}
