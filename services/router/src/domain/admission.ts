/**
 * Admission: which base worker runs a request. A cold adapter waits a little for its load; among the
 * workers able to serve it the rank-aware choice wins (see worker-choice.ts).
 */
import { FailedPreconditionError, ResourceExhaustedError, UnavailableError } from "@loramesh/errors";
import type { PlacementView, WorkerInfo } from "../peers/placement-view";
import { chooseWorker, InFlightRanks } from "../worker-choice";

export interface AdmissionOptions {
  placement: PlacementView;
  /** How long a request waits for a cold adapter to become resident. */
  adapterWaitMs: number;
  /** Extra in-flight requests a worker may have and still be preferred for rank grouping. */
  routingSlack?: number;
  /** Most requests in flight on the router; 0 = no limit. More are refused (ResourceExhausted). */
  maxInFlight?: number;
  /** Called at once when an admitted request's adapter is resident nowhere (the prefetch hint). */
  onCold?: (adapterId: string) => void;
}

export class Admission {
  private readonly inFlight = new InFlightRanks();
  private total = 0;

  constructor(private readonly options: AdmissionOptions) {}

  /** Takes one of the router's in-flight slots (refused at the limit); returns its release. */
  reserve(): () => void {
    const max = this.options.maxInFlight ?? 0;
    if (max > 0 && this.total >= max)
      throw new ResourceExhaustedError(`the router is at its limit of ${max} requests in flight; retry shortly`);
    this.total++;
    let released = false;
    return () => {
      if (!released) this.total--;
      released = true;
    };
  }

  async pickWorker(adapterId: string | undefined, rank: number): Promise<WorkerInfo> {
    const { placement } = this.options;
    await placement.ready;
    let candidates = placement.candidates(adapterId);
    if (candidates.length === 0 && adapterId !== undefined) {
      // A cold adapter: hint the provisioner to load it now, then wait a little for the load to
      // finish rather than failing at once.
      this.options.onCold?.(adapterId);
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
