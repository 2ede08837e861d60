import { expect } from "chai";
import { execFileSync } from "node:child_process";
import { join } from "node:path";

/**
 * A real Node process per setting, with the worker's allocation pattern: objects live across a few
 * young collections (promoted), then die in the old generation. Asserts on what V8 reports, never on
 * time: with tuneHeap the old generation is collected at a smaller size, so the heap's peak is lower
 * and its full collections are more (and each smaller).
 */
const CHILD = `
const { tuneHeap } = require(${JSON.stringify(join(__dirname, "heap-tuning.js"))});
const { PerformanceObserver, constants } = require("node:perf_hooks");
const v8 = require("node:v8");
const heap = tuneHeap(Number(process.argv[1]));
const collected = heap.collect();
let majors = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if (e.detail && e.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++;
}).observe({ entryTypes: ["gc"] });
const ring = new Array(4000);
let peak = 0;
(async () => {
  for (let i = 0; i < 600000; i++) {
    ring[i % ring.length] = new Array(256).fill(i);
    if (i % 500 === 0) {
      peak = Math.max(peak, v8.getHeapStatistics().used_heap_size);
      await new Promise((r) => setImmediate(r));
    }
  }
  process.stdout.write(JSON.stringify({ collected, majors, peakMiB: peak / 2 ** 20 }));
})();
`;

interface ChildResult {
  collected: boolean;
  majors: number;
  peakMiB: number;
}

const run = (percent: number): ChildResult =>
  JSON.parse(execFileSync(process.execPath, ["-e", CHILD, String(percent)], { encoding: "utf8" })) as ChildResult;

describe("the worker's heap tuning (real processes)", function () {
  this.timeout(120_000);

  it("collects once when asked and keeps the old generation small under churn", () => {
    const tuned = run(50);
    const untuned = run(0);
    expect(tuned.collected).to.equal(true);
    expect(untuned.collected).to.equal(false);
    expect(tuned.majors, "full collections").to.be.greaterThan(untuned.majors);
    expect(tuned.peakMiB, `peak ${tuned.peakMiB} vs ${untuned.peakMiB} MiB`).to.be.below(untuned.peakMiB * 0.75);
  });
});
