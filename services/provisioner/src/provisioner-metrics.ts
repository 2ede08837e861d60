/**
 * Prometheus series of the provisioner: live executors, registered adapters, the placement epoch,
 * per-adapter traffic and residency, and the LoRA-server count it recommends.
 */
import type { Plan } from "@loramesh/policy";
import { ExecutorKind } from "@loramesh/proto";
import { telemetry } from "@loramesh/telemetry";
import type { Redis } from "ioredis";
import type { AdapterRegistry } from "./adapter-registry";
import type { ExecutorRegistry } from "./executor-registry";
import type { PlacementStore } from "./placement-store";
import { requestCounts } from "./traffic";

/**
 * The LoRA servers needed to hold every registered adapter once, given the smallest live server's
 * budget (at least 1). Capacity-only; the SLO-driven planner refines it.
 */
export function recommendLoraServers(totalAdapterBytes: number, serverCapacityBytes: number): number {
  if (serverCapacityBytes <= 0) return 1;
  return Math.max(1, Math.ceil(totalAdapterBytes / serverCapacityBytes));
}

export function provisionerMetrics(
  redis: Redis,
  executors: ExecutorRegistry,
  adapters: AdapterRegistry,
  placement: PlacementStore,
  plan: () => Promise<Plan | undefined>,
): void {
  const m = telemetry().meter;
  m.createObservableGauge("loramesh_executors", { description: "live executors, by kind" }).addCallback(async (r) => {
    const live = await executors.live();
    r.observe(live.filter((e) => e.info.kind === ExecutorKind.EXECUTOR_KIND_BASE_WORKER).length, {
      kind: "base_worker",
    });
    r.observe(live.filter((e) => e.info.kind === ExecutorKind.EXECUTOR_KIND_LORA_SERVER).length, {
      kind: "lora_server",
    });
  });
  m.createObservableGauge("loramesh_placement_epoch", { description: "placement epoch" }).addCallback(async (r) =>
    r.observe(await placement.epoch()),
  );
  m.createObservableGauge("loramesh_adapters_registered", { description: "registered adapters" }).addCallback(
    async (r) => r.observe((await adapters.allIds()).length),
  );
  m.createObservableGauge("loramesh_adapter_replicas", {
    description: "executors where each adapter is resident",
  }).addCallback(async (r) => {
    const ids = await adapters.allIds();
    for (const [id, { holders }] of await placement.residencyOf(ids)) r.observe(holders.length, { adapter: id });
  });
  m.createObservableCounter("loramesh_adapter_requests_total", {
    description: "requests served per adapter (from worker heartbeats)",
  }).addCallback(async (r) => {
    const ids = await adapters.allIds();
    const counts = await requestCounts(redis, ids);
    ids.forEach((id, i) => r.observe(counts[i] as number, { adapter: id }));
  });
  // The SLO-driven planner (knapsack coverage + cost-model TPOT) on live traffic; where it has
  // nothing to go on (no adapters, or servers without a byte budget), capacity alone.
  const recommendation = m.createObservableGauge("loramesh_recommended_lora_servers", {
    description: "LoRA servers the planner recommends for the coverage and TPOT targets",
  });
  const coverage = m.createObservableGauge("loramesh_planned_coverage", {
    description: "probability that a request's adapter is resident on arrival, under the recommendation",
  });
  m.addBatchObservableCallback(
    async (r) => {
      const p = await plan();
      if (p) {
        r.observe(recommendation, p.loraServers);
        r.observe(coverage, p.coverage);
        return;
      }
      const live = await executors.live();
      const capacities = live
        .filter((e) => e.info.kind === ExecutorKind.EXECUTOR_KIND_LORA_SERVER)
        .map((e) => e.info.adapterCapacityBytes);
      const total = (await adapters.all()).reduce((sum, a) => sum + a.sizeBytes, 0);
      r.observe(recommendation, recommendLoraServers(total, capacities.length > 0 ? Math.min(...capacities) : 0));
    },
    [recommendation, coverage],
  );
}
