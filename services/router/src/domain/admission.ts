/**
 * Admission: which base worker runs a request (how many run at once is the gate's: admission-gate.ts). A cold adapter waits a little for its load; among the
 * workers able to serve it the rank-aware choice wins (see worker-choice.ts).
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
}

export class Admission {
  private readonly inFlight = new InFlightRanks();

  constructor(private readonly options: AdmissionOptions) {}

  async pickWorker(adapterId: string | undefined, rank: number): Promise<WorkerInfo> {
    const { placement } = this.options;
    await placement.ready;
    let candidates = placement.candidates(adapterId);
    if (candidates.length === 0 && adapterId !== undefined) {
      // A cold adapter: wait a little for its load to finish rather than failing at once.
      await placement.untilServable(adapterId, this.options.adapterWaitMs);
      candidates = placement.candidates(adapterId);
      if (candidates.length === 0)
        throw new FailedPreconditionError("the adapter is not loaded on any executor yet; retry shortly");
    }
    const localHolders = placement.localHolders(adapterId);
    const chosen = chooseWorker(candidates, this.inFlight, { rank, localHolders }, this.options.routingSlack);
    if (!chosen) throw new UnavailableError("no base worker is available");
    return chosen;
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
