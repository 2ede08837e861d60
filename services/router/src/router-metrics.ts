/** Prometheus series of the router: requests, TTFT and TPOT per adapter, SLO attainment. */
import { telemetry } from "@loramesh/telemetry";
import type { AdmissionEvents, AdmissionOutcome, RejectReason } from "./domain/admission-gate";

export interface SloTargets {
  ttftMs: number;
  tpotMs: number;
}

export class RouterMetrics implements AdmissionEvents {
  private readonly m = telemetry().meter;
  private readonly requests = this.m.createCounter("loramesh_requests_total", {
    description: "requests, by tenant, adapter and outcome",
  });
  private readonly ttft = this.m.createHistogram("loramesh_ttft_seconds", {
    description: "time to first token, by adapter",
    unit: "s",
    advice: { explicitBucketBoundaries: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] },
  });
  private readonly tpot = this.m.createHistogram("loramesh_tpot_seconds", {
    description: "mean time per output token, by adapter",
    unit: "s",
    advice: { explicitBucketBoundaries: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5] },
  });
  private readonly slo = this.m.createCounter("loramesh_slo_requests_total", {
    description: "finished requests by adapter and whether they met the TTFT and TPOT targets",
  });
  private readonly inFlight = this.m.createUpDownCounter("loramesh_requests_in_flight", {
    description: "requests being served",
  });
  private readonly resubmissions = this.m.createCounter("loramesh_request_resubmissions_total", {
    description: "requests resubmitted to another worker after their worker was lost",
  });

  private readonly admission = this.m.createCounter("loramesh_admission_total", {
    description: "admission outcomes by tenant: admitted at once, queued, rejected (reason queue-full or slo)",
  });

  constructor(readonly targets: SloTargets) {
    this.m
      .createObservableGauge("loramesh_slo_ttft_target_seconds")
      .addCallback((r) => r.observe(targets.ttftMs / 1000));
    this.m
      .createObservableGauge("loramesh_slo_tpot_target_seconds")
      .addCallback((r) => r.observe(targets.tpotMs / 1000));
  }

  onOutcome(outcome: AdmissionOutcome, tenant: string, reason?: RejectReason): void {
    this.admission.add(1, { tenant, outcome, ...(reason !== undefined ? { reason } : {}) });
  }

  started(): void {
    this.inFlight.add(1);
  }

  resubmitted(): void {
    this.resubmissions.add(1);
  }

  finished(
    tenant: string,
    adapter: string,
    outcome: string,
    ttftMs: number | undefined,
    tpotMs: number | undefined,
  ): void {
    this.inFlight.add(-1);
    const a = adapter || "base";
    this.requests.add(1, { tenant, adapter: a, outcome });
    if (outcome !== "ok" || ttftMs === undefined) return;
    this.ttft.record(ttftMs / 1000, { adapter: a });
    if (tpotMs !== undefined && tpotMs > 0) this.tpot.record(tpotMs / 1000, { adapter: a });
    const met = ttftMs <= this.targets.ttftMs && (tpotMs ?? 0) <= this.targets.tpotMs;
    this.slo.add(1, { adapter: a, attained: String(met) });
  }
}
