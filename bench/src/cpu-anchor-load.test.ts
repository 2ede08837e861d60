// bench:cpu-anchor's load states: both engines get the same page-cache state before each timed load,
// whatever ran before them (the ordering is checked here; the timings are the benchmark's).
import { expect } from "chai";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { native } from "@loramesh/native";
import { applyStep, roundPlan, type EngineName } from "./cpu-anchor-load";

const files: Record<EngineName, string[]> = {
  loramesh: ["/m/model.safetensors"],
  llamacpp: ["/m/model-F16.gguf"],
};

describe("bench:cpu-anchor load states", function () {
  it("gives each engine a cold load-only process after evicting every file, then its warm worker", function () {
    for (const order of [
      ["loramesh", "llamacpp"],
      ["llamacpp", "loramesh"],
    ] as const) {
      const plan = roundPlan(order, files);
      expect(plan.map((s) => `${s.engine}:${s.state}`)).to.deep.equal([
        `${order[0]}:cold`,
        `${order[0]}:warm`,
        `${order[1]}:cold`,
        `${order[1]}:warm`,
      ]);
      for (const step of plan) {
        const own = files[step.engine],
          other = files[step.engine === "loramesh" ? "llamacpp" : "loramesh"];
        if (step.state === "cold") {
          expect(step.evict).to.have.members([...own, ...other]);
          expect(step.warm).to.deep.equal([]);
        } else {
          expect(step.warm).to.deep.equal(own);
          expect(step.evict).to.have.members([...own, ...other]);
        }
      }
    }
  });

  it("the state before a step does not depend on the step before it", function () {
    // Replays the page cache as a set: the state each process starts in is the same for both
    // engines (own files resident or not, the other's never), in either order.
    const resident = new Set<string>();
    const cache = (f: string, op: "evict" | "warm" | "query"): number => {
      if (op === "evict") resident.delete(f);
      if (op === "warm") resident.add(f);
      return resident.has(f) ? 1 : 0;
    };
    const seen = new Map<string, string>();
    for (const order of [
      ["loramesh", "llamacpp"],
      ["llamacpp", "loramesh"],
    ] as const) {
      resident.add("/m/model.safetensors"); // whatever an earlier process left behind
      for (const step of roundPlan(order, files)) {
        const state = applyStep(step, cache);
        const own = files[step.engine][0] as string,
          other = files[step.engine === "loramesh" ? "llamacpp" : "loramesh"][0] as string;
        const key = `${step.state}: own ${state[own]}, other ${state[other]}`;
        expect(key).to.equal(step.state === "cold" ? "cold: own 0, other 0" : "warm: own 1, other 0");
        seen.set(`${order[0]}-${step.engine}-${step.state}`, key);
        // Applying the set-up and touching one file in between (a process that ran) changes nothing.
        resident.add(other);
      }
    }
    expect(seen.size).to.equal(8);
  });

  it("native.fileCache warms a real file and reports its resident fraction", function () {
    const dir = mkdtempSync(join(tmpdir(), "cpu-anchor-load-"));
    try {
      const path = join(dir, "weights.bin");
      writeFileSync(path, Buffer.alloc(1 << 20, 7));
      expect(native.fileCache(path, "warm")).to.equal(1);
      // Eviction is advice (tmpfs keeps its pages; a page another process maps stays), so only
      // its range is checked.
      const after = native.fileCache(path, "evict");
      expect(after).to.be.within(0, 1);
      expect(native.fileCache(path, "query")).to.be.within(0, 1);
      expect(() => native.fileCache(join(dir, "missing"), "query")).to.throw(/cannot open/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
