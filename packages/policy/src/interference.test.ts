import { expect } from "chai";
import {
  confirmedSentinel,
  disturbanceReasons,
  disturbedEntries,
  GUARD_THRESHOLDS,
  guardRound,
  type GuardedAttempt,
  type RoundSignals,
  sentinelBaseline,
} from "./interference";

const calm: RoundSignals = { stealShare: 0.001, iowaitShare: 0, foreignCores: 0.02, sentinelRatio: 1.05 };

// The guard's decisions on given signals: no clock is read, the tests assert on the attempts.
describe("interference guard (validate-simulator's disturbed rounds)", function () {
  it("flags each signal over its threshold and nothing on an undisturbed round", function () {
    expect(disturbanceReasons(calm)).to.deep.equal([]);
    expect(disturbanceReasons({ ...calm, stealShare: GUARD_THRESHOLDS.maxStealShare * 2 })).to.deep.equal(["steal"]);
    expect(disturbanceReasons({ ...calm, foreignCores: 0.9 })).to.deep.equal(["foreign-cpu"]);
    expect(disturbanceReasons({ ...calm, sentinelRatio: 2 })).to.deep.equal(["sentinel"]);
    expect(disturbanceReasons({ stealShare: 0.2, iowaitShare: 0.5, foreignCores: 1, sentinelRatio: 3 })).to.deep.equal([
      "steal",
      "foreign-cpu",
      "sentinel",
    ]);
    // iowait alone is reported, not a reason; a missing signal never flags.
    expect(disturbanceReasons({ ...calm, iowaitShare: 0.5 })).to.deep.equal([]);
    expect(
      disturbanceReasons({ stealShare: null, iowaitShare: null, foreignCores: null, sentinelRatio: null }),
    ).to.deep.equal([]);
  });

  it("keeps an undisturbed round's first measurement without re-running it", function () {
    let calls = 0;
    const g = guardRound(() => ({ result: ++calls, signals: calm }));
    expect(calls).to.equal(1);
    expect(g.result).to.equal(1);
    expect(g.keptDisturbed).to.equal(false);
    expect(disturbedEntries("c", 0, g)).to.deep.equal([]);
  });

  it("re-runs a disturbed round and keeps the first undisturbed re-run", function () {
    const signals = [{ ...calm, foreignCores: 0.8 }, calm, calm];
    const seen: Array<GuardedAttempt<number>> = [];
    let calls = 0;
    const g = guardRound(() => ({ result: calls, signals: signals[calls++] as RoundSignals }), {
      onAttempt: (a) => seen.push(a),
    });
    expect(calls).to.equal(2);
    expect(g.result).to.equal(1);
    expect(g.keptDisturbed).to.equal(false);
    expect(seen.map((a) => a.reasons)).to.deep.equal([["foreign-cpu"], []]);
    const entries = disturbedEntries("disaggregated", 0, g);
    expect(entries).to.have.length(1);
    expect(entries[0]).to.include({
      case: "disaggregated",
      round: 0,
      attempt: 0,
      rerun: true,
      kept: false,
      foreignCores: 0.8,
    });
  });

  it("re-runs at most maxReruns times, then keeps the last measurement and marks it", function () {
    let calls = 0;
    const g = guardRound(() => ({ result: calls++, signals: { ...calm, stealShare: 0.1 } }), { maxReruns: 2 });
    expect(calls).to.equal(3);
    expect(g.result).to.equal(2);
    expect(g.keptDisturbed).to.equal(true);
    const entries = disturbedEntries("probe", 1, g);
    expect(entries.map((e) => [e.attempt, e.rerun, e.kept])).to.deep.equal([
      [0, true, false],
      [1, true, false],
      [2, false, true],
    ]);
    // No re-runs allowed: the one measurement is kept and marked.
    let once = 0;
    const g0 = guardRound(() => ({ result: once++, signals: { ...calm, sentinelRatio: 9 } }), { maxReruns: 0 });
    expect(once).to.equal(1);
    expect(g0.keptDisturbed).to.equal(true);
    expect(() => guardRound(() => ({ result: 0, signals: calm }), { maxReruns: -1 })).to.throw(RangeError);
  });

  it("takes the sentinel's baseline as the median of its timings", function () {
    expect(sentinelBaseline([])).to.equal(null);
    expect(sentinelBaseline([50, 200, 52])).to.equal(52);
    expect(sentinelBaseline([50, 54, 52, 60])).to.equal(53);
  });

  it("times a slow sentinel again and keeps the lower timing; a lasting slowness stays slow", function () {
    // The timings a sentinel would give, in order; each one timed is recorded like the bench does.
    const run = (sequence: number[], retimes?: number) => {
      const recorded = [50, 50, 51, 49, 50];
      let i = 0;
      const time = (): number => {
        const ms = sequence[i++] as number;
        recorded.push(ms);
        return ms;
      };
      const r = confirmedSentinel(time, () => sentinelBaseline(recorded), 1.5, retimes);
      return { ...r, timed: i };
    };
    // An undisturbed timing is not timed again.
    expect(run([52, 90])).to.deep.equal({ ms: 52, timingsMs: [52], timed: 1 });
    // One slow timing next to a normal one (a transient in the sentinel itself): the normal one counts.
    expect(run([85, 51])).to.deep.equal({ ms: 51, timingsMs: [85, 51], timed: 2 });
    // Slow again (a disturbance that lasts): still over 1.5× the baseline, so the round is flagged.
    const lasting = run([85, 80]);
    expect(lasting.ms).to.equal(80);
    expect(lasting.ms / (sentinelBaseline([50, 50, 51, 49, 50, 85, 80]) as number)).to.be.above(1.5);
    // At most `retimes` more timings; 0 gives the single timing as before m15p.
    expect(run([85, 84, 83, 51], 2)).to.deep.equal({ ms: 83, timingsMs: [85, 84, 83], timed: 3 });
    expect(run([85, 51], 0)).to.deep.equal({ ms: 85, timingsMs: [85], timed: 1 });
    expect(() => run([50], -1)).to.throw(RangeError);
  });
});
