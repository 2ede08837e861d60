/** Adapter jobs as the domain reports them (plain data; handlers map them to protobuf). */
import type { AdapterJobData, AdapterJobQueues } from "@loramesh/mesh";
import type { Job } from "bullmq";

/** The job's lifecycle, folded from BullMQ's states. */
export type JobPhase = "waiting" | "active" | "delayed" | "completed" | "failed" | "unknown";

export interface JobView {
  jobId: string;
  kind: string;
  adapterId: string;
  executorId: string;
  phase: JobPhase;
  /** In [0, 1]. */
  progress: number;
  attempts: number;
  error: string;
  /** Failed before its attempt budget was spent: an UnrecoverableError (a bad adapter). */
  permanentFailure: boolean;
}

const PHASE_OF_STATE: Record<string, JobPhase> = {
  waiting: "waiting",
  "waiting-children": "waiting",
  prioritized: "waiting",
  active: "active",
  delayed: "delayed",
  completed: "completed",
  failed: "failed",
};

export async function jobView(job: Job<AdapterJobData>, executorId: string): Promise<JobView> {
  const state = await job.getState();
  const failed = state === "failed";
  return {
    jobId: job.id ?? "",
    kind: job.data.kind,
    adapterId: job.data.adapterId,
    executorId,
    phase: PHASE_OF_STATE[state] ?? "unknown",
    progress: typeof job.progress === "number" ? job.progress : state === "completed" ? 1 : 0,
    attempts: job.attemptsMade,
    error: job.failedReason ?? "",
    // BullMQ marks unrecoverable failures by finishing before the attempt budget is spent.
    permanentFailure: failed && job.attemptsMade < (job.opts.attempts ?? 1),
  };
}

/** The views of jobs given as executor id → job id, in executor order (missing jobs left out). */
export async function jobViews(jobs: AdapterJobQueues, entries: Record<string, string>): Promise<JobView[]> {
  const out: JobView[] = [];
  for (const [executorId, jobId] of Object.entries(entries).sort()) {
    const job = await jobs.job(executorId, jobId);
    if (job) out.push(await jobView(job, executorId));
  }
  return out;
}

export const jobEnded = (j: JobView): boolean => j.phase === "completed" || j.phase === "failed";
