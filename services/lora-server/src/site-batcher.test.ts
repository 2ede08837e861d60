import { expect } from "chai";
import { join } from "node:path";
import { loadAdapter } from "@loramesh/engine";
import { loadModelConfig, siteShape } from "@loramesh/formats";
import { captureLogger, GOLDEN_DIR } from "@loramesh/testing";
import { AdapterPool } from "./adapter-pool";
import { SiteBatcher, type WorkItem } from "./site-batcher";

const model = loadModelConfig(join(GOLDEN_DIR, "models", "tiny-llama"));
const ADAPTER_DIR = join(GOLDEN_DIR, "adapters", "tiny-llama", "chat-r16-all");

async function poolWithAdapter(): Promise<AdapterPool> {
  const pool = new AdapterPool({ model, capacityBytes: 1 << 24, hostCacheBytes: 0, logger: captureLogger() });
  await pool.load("a", ADAPTER_DIR, loadAdapter(ADAPTER_DIR, model).contentHash, false);
  return pool;
}

/** A deterministic layer-0 qkv item of two rows under the adapter (`seed` varies the input). */
function item(seed: number): WorkItem {
  const { hIn, nOut } = siteShape(model, "qkv");
  return {
    layer: 0,
    site: "qkv",
    x: Float32Array.from({ length: 2 * hIn }, (_, i) => Math.sin(i * 0.37 + seed)),
    rows: 2,
    hIn,
    nOut,
    rowAdapterIds: ["a", "a"],
    rowExpert: undefined,
  };
}

describe("LoRA server site batcher", function () {
  this.timeout(30_000);

  it("holds a worker's item while another active worker is busy, then runs both in one call", async () => {
    const pool = await poolWithAdapter();
    // A window and activity span far longer than the test: only the workers' posts decide.
    const batcher = new SiteBatcher({ pool, windowMs: 600_000, activeMs: 600_000 });
    const alone = await batcher.submit(item(1), 1); // the only active worker: runs at once
    expect(batcher.stats).to.deep.equal({ nativeCalls: 1, workItems: 1, rows: 2 });

    const fromWorker2 = batcher.submit(item(2), 2); // worker 1 is active and not blocked: waits
    await new Promise((r) => setImmediate(r));
    expect(batcher.stats.nativeCalls, "worker 2's item waits for worker 1").to.equal(1);
    const fromWorker1 = batcher.submit(item(1), 1); // now every active worker is blocked
    const [d2, d1] = await Promise.all([fromWorker2, fromWorker1]);
    expect(batcher.stats).to.deep.equal({ nativeCalls: 2, workItems: 3, rows: 6 });

    // Each worker gets its own rows back, as from a call of its own.
    const solo = await new SiteBatcher({ pool, windowMs: 0 }).submit(item(2), 2);
    const maxDiff = (a: Float32Array, b: Float32Array) => Math.max(...a.map((v, i) => Math.abs(v - (b[i] as number))));
    expect(d1.length).to.equal(alone.length);
    expect(maxDiff(d1, alone)).to.be.below(1e-5);
    expect(d2.length).to.equal(solo.length);
    expect(maxDiff(d2, solo)).to.be.below(1e-5);
  });

  it("stops holding the others when a busy worker falls quiet, however long the window", async () => {
    const pool = await poolWithAdapter();
    const batcher = new SiteBatcher({ pool, windowMs: 600_000, activeMs: 20 });
    await batcher.submit(item(1), 1);
    // Worker 1 posts nothing more: worker 2's item runs once worker 1 no longer counts as active,
    // not when the ten-minute window ends (the test's timeout would fail first).
    await batcher.submit(item(2), 2);
    expect(batcher.stats.nativeCalls).to.equal(2);
  });
});
