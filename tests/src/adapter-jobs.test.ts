import { expect } from "chai";
import { join } from "node:path";
import { UnavailableError, AdapterError } from "@loramesh/errors";
import { AdapterJobQueues, startAdapterJobWorker, type AdapterJobData } from "@loramesh/mesh";
import { captureLogger, GOLDEN_DIR, startTestRedis, waitFor, type TestRedis } from "@loramesh/testing";

describe("adapter jobs on BullMQ (real Redis)", function () {
  this.timeout(30_000);
  let redis: TestRedis;
  let queues: AdapterJobQueues;

  before(async () => {
    redis = await startTestRedis();
    queues = new AdapterJobQueues(redis.url);
  });
  after(async () => {
    await queues.close();
    await redis.stop();
  });

  const job = (adapterId: string, executorId: string): AdapterJobData => ({
    kind: "load",
    adapterId,
    dir: join(GOLDEN_DIR, "adapters", "tiny-llama", "sql-r8"),
    contentHash: "",
    executorId,
    pin: false,
  });

  it("is idempotent: the same load scheduled twice is one job", async () => {
    const a = await queues.add(job("t.a.1", "exec-1"));
    const b = await queues.add(job("t.a.1", "exec-1"));
    expect(a).to.equal(b);
    expect(await queues.queue("exec-1").getJobCounts("waiting")).to.deep.equal({ waiting: 1 });
  });

  it("retries transient failures with backoff, reports progress, and marks bad adapters as permanent failures", async () => {
    let attempts = 0;
    const worker = startAdapterJobWorker(
      redis.url,
      "exec-2",
      {
        load: async (data, progress) => {
          if (data.adapterId === "t.bad.1") throw new AdapterError("use_dora: DoRA adapters are not supported");
          attempts++;
          if (attempts < 3) throw new UnavailableError("disk busy");
          await progress(0.5);
          await progress(1);
          return { sizeBytes: 42 };
        },
        unload: async () => undefined,
      },
      captureLogger(),
    );
    try {
      const good = await queues.add(job("t.good.1", "exec-2"));
      const bad = await queues.add(job("t.bad.1", "exec-2"));
      const done = await waitFor(
        async () => {
          const j = await queues.job("exec-2", good);
          return (await j?.getState()) === "completed" ? j : undefined;
        },
        20_000,
        "the good job",
      );
      expect(done.attemptsMade).to.equal(3);
      expect(done.progress).to.equal(1);
      const failed = await waitFor(
        async () => {
          const j = await queues.job("exec-2", bad);
          return (await j?.getState()) === "failed" ? j : undefined;
        },
        20_000,
        "the bad job",
      );
      expect(failed.attemptsMade).to.equal(1);
      expect(failed.failedReason).to.match(/use_dora/);
    } finally {
      await worker.close();
    }
  });
});
