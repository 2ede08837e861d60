/**
 * Admission: which base worker runs a request (how many run at once is the gate's:
 * admission-gate.ts). A cold adapter waits a little for its load; among the workers able to serve it
 * the rank-aware choice wins (see worker-choice.ts). A worker the router
 * lost (connection dropped, keepalive unanswered) is not chosen again until the placement drops it
 * or a short quarantine ends, whichever comes first.
 */
import { FailedPreconditionError, UnavailableError } from "@loramesh/errors";
import type { PlacementView, WorkerInfo } from "../peers/placement-view";
import { chooseWorker, InFlightRanks } from "../worker-choice";

export interface AdmissionOptions {
  placement: PlacementView;
  /** How long a request waits for a cold adapter to become resident. */
  adapterWaitMs: number;
  /** Extra in-flight requests a worker may have and still be preferred for rank grouping. */
  routingSlack?: number;
  /** How long a lost worker is left out when the placement still lists it. */
  lostWorkerMs?: number;
  /** Called at once when an admitted request's adapter is resident nowhere (the prefetch hint). */
  onCold?: (adapterId: string) => void;
}

export class Admission {
  private readonly inFlight = new InFlightRanks();
  /** Lost workers → until when they are left out. */
  private readonly lost = new Map<string, number>();

  constructor(private readonly options: AdmissionOptions) {}

  /** Stops routing to a worker at once (its requests are being resubmitted elsewhere). */
  workerLost(workerId: string): void {
    this.lost.set(workerId, performance.now() + (this.options.lostWorkerMs ?? 10_000));
  }

  async pickWorker(adapterId: string | undefined, rank: number): Promise<WorkerInfo> {
    const { placement } = this.options;
    await placement.ready;
    let candidates = this.usable(adapterId);
    if (candidates.length === 0) {
      // A cold adapter: hint the provisioner to load it now (prefetch). Then (a cold adapter, or every
      // worker lost for the moment) wait a little rather than failing at once.
      if (adapterId !== undefined && placement.candidates(adapterId).length === 0) this.options.onCold?.(adapterId);
      await placement.until(() => this.usable(adapterId).length > 0, this.options.adapterWaitMs);
      candidates = this.usable(adapterId);
      if (candidates.length === 0 && adapterId !== undefined && placement.candidates(adapterId).length === 0)
        throw new FailedPreconditionError("the adapter is not loaded on any executor yet; retry shortly");
    }
    const localHolders = placement.localHolders(adapterId);
    const chosen = chooseWorker(candidates, this.inFlight, { rank, localHolders }, this.options.routingSlack);
    if (!chosen) throw new UnavailableError("no base worker is available");
    return chosen;
  }

  /** Candidates minus the workers lost recently (those the placement dropped are forgotten). */
  private usable(adapterId: string | undefined): WorkerInfo[] {
    const now = performance.now();
    const listed = new Set(this.options.placement.workerIds());
    for (const [id, until] of this.lost) if (until <= now || !listed.has(id)) this.lost.delete(id);
    return this.options.placement.candidates(adapterId).filter((w) => !this.lost.has(w.executorId));
  }

  /** Counts a request on its worker while `work` runs. */
  async holding<T>(workerId: string, rank: number, work: () => Promise<T>): Promise<T> {
    this.inFlight.add(workerId, rank);
    try {
      return await work();
    } finally {
      this.inFlight.remove(workerId, rank);
    }
  }
}
