import { expect } from "chai";
import { CancelledError, DeadlineExceededError, ResourceExhaustedError } from "@loramesh/errors";
import { AdmissionGate, type AdmissionLimits, type AdmissionOutcome } from "./admission-gate";

const limits = (l: Partial<AdmissionLimits>): AdmissionLimits => ({
  maxInFlight: 0,
  tenantMaxInFlight: 0,
  maxQueued: 0,
  sloTtftMs: 1_000,
  sloFactor: 1,
  ...l,
});

/** Settles a promise's state without waiting for it: "pending", "granted" or the error. */
function track<T>(p: Promise<T>): { state: "pending" | "granted" | Error; value?: T } {
  const t: { state: "pending" | "granted" | Error; value?: T } = { state: "pending" };
  p.then(
    (v) => {
      t.state = "granted";
      t.value = v;
    },
    (e: unknown) => {
      t.state = e as Error;
    },
  );
  return t;
}
const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

async function refusal(p: Promise<unknown>): Promise<ResourceExhaustedError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).to.be.instanceOf(ResourceExhaustedError);
  return err as ResourceExhaustedError;
}

describe("admission gate: in-flight limits, a bounded queue, SLO refusal", () => {
  it("refuses beyond --max-in-flight at once when no queue is configured, with a retry hint", async () => {
    const events: string[] = [];
    const gate = new AdmissionGate(limits({ maxInFlight: 2 }), {
      onOutcome: (o: AdmissionOutcome, t, r) => events.push(`${o}:${t}${r ? `:${r}` : ""}`),
    });
    const a = await gate.acquire("t", "unspecified");
    await gate.acquire("t", "unspecified");
    const err = await refusal(gate.acquire("t", "unspecified"));
    expect(err.message).to.match(/limit of requests in flight \(2 on the router\)/);
    expect(err.retryAfterMs).to.be.greaterThan(0);
    a();
    a(); // a release runs once
    await gate.acquire("t", "unspecified");
    expect(events).to.deep.equal(["admitted:t", "admitted:t", "rejected:t:queue-full", "admitted:t"]);
    expect(gate.snapshot()).to.include({ admitted: 3, rejectedQueueFull: 1, inFlight: 2, waiting: 0 });
  });

  it("queues up to --max-queued in arrival order and refuses the next", async () => {
    const gate = new AdmissionGate(limits({ maxInFlight: 1, maxQueued: 2 }));
    const first = await gate.acquire("t", "unspecified");
    const b = track(gate.acquire("t", "unspecified"));
    const c = track(gate.acquire("t", "unspecified"));
    await refusal(gate.acquire("t", "unspecified"));
    await flush();
    expect([b.state, c.state]).to.deep.equal(["pending", "pending"]);
    first();
    await flush();
    expect([b.state, c.state]).to.deep.equal(["granted", "pending"]);
    (b.value as () => void)();
    await flush();
    expect(c.state).to.equal("granted");
    expect(gate.snapshot()).to.include({ admitted: 1, queued: 2, rejectedQueueFull: 1, inFlight: 1, waiting: 0 });
  });

  it("holds one tenant to --tenant-max-in-flight while another tenant's requests go ahead", async () => {
    const gate = new AdmissionGate(limits({ tenantMaxInFlight: 1, maxQueued: 4 }));
    const a1 = await gate.acquire("a", "unspecified");
    const a2 = track(gate.acquire("a", "unspecified"));
    const b1 = track(gate.acquire("b", "unspecified"));
    await flush();
    expect(a2.state, "a waits for its own slot").to.equal("pending");
    expect(b1.state, "b is not behind a's queue").to.equal("granted");
    a1();
    await flush();
    expect(a2.state).to.equal("granted");
    expect(gate.snapshot()).to.include({ admitted: 2, queued: 1, rejectedQueueFull: 0, inFlight: 2 });
  });

  it("a queued request that is cancelled or whose deadline passes leaves the queue with a typed error", async () => {
    const gate = new AdmissionGate(limits({ maxInFlight: 1, maxQueued: 4 }));
    const held = await gate.acquire("t", "unspecified");
    const controller = new AbortController();
    const cancelled = track(gate.acquire("t", "unspecified", { signal: controller.signal }));
    const expired = track(gate.acquire("t", "unspecified", { deadline: Date.now() }));
    controller.abort();
    await new Promise((r) => setTimeout(r, 5));
    expect(cancelled.state).to.be.instanceOf(CancelledError);
    expect(expired.state).to.be.instanceOf(DeadlineExceededError);
    expect(gate.snapshot().waiting).to.equal(0);
    held();
    expect(gate.snapshot().inFlight).to.equal(0);
  });

  it("refuses a request that would queue when its predicted TTFT misses the SLO; batch requests still queue", async () => {
    const gate = new AdmissionGate(limits({ maxInFlight: 1, maxQueued: 10, sloTtftMs: 100 }));
    expect(gate.predictTtftMs(1), "nothing measured yet").to.equal(undefined);
    // Measure the drain interval: two releases while requests wait.
    let held = await gate.acquire("t", "unspecified");
    const w1 = gate.acquire("t", "unspecified");
    const w2 = gate.acquire("t", "unspecified");
    held();
    held = await w1;
    held();
    held = await w2;
    // Every request has so far taken 500 ms from its slot to its first token: 5 × the target.
    gate.recordServiceTtft(500);
    expect(gate.predictTtftMs(1)).to.be.greaterThan(500 - 1e-9);
    const err = await refusal(gate.acquire("t", "interactive"));
    expect(err.message).to.match(/over the 100 ms target/);
    const batch = track(gate.acquire("t", "batch"));
    await flush();
    expect(batch.state).to.equal("pending");
    held();
    await flush();
    expect(batch.state).to.equal("granted");
    expect(gate.snapshot()).to.include({ rejectedSlo: 1, queued: 3 });
  });

  it("with --admission-slo-factor 0 it never refuses on the SLO", async () => {
    const gate = new AdmissionGate(limits({ maxInFlight: 1, maxQueued: 10, sloTtftMs: 1, sloFactor: 0 }));
    let held = await gate.acquire("t", "unspecified");
    const w1 = gate.acquire("t", "unspecified");
    const w2 = gate.acquire("t", "unspecified");
    held();
    held = await w1;
    held();
    await w2;
    gate.recordServiceTtft(10_000);
    const next = track(gate.acquire("t", "interactive"));
    await flush();
    expect(next.state).to.equal("pending");
    expect(gate.snapshot().rejectedSlo).to.equal(0);
  });
});
