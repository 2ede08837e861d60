// Admission control in a real cluster: per-tenant and global in-flight limits, the bounded queue,
// and refusals with a retry hint over gRPC and HTTP. The worker is paused (SIGSTOP) while the
// requests arrive, so which are admitted, queued and refused follows from the limits alone.
import { expect } from "chai";
import { status } from "@grpc/grpc-js";
import type { LocalCluster } from "@loramesh/cli";
import { LoraMeshClient, LoraMeshClientError, type GenerateInput } from "@loramesh/sdk";
import { waitFor } from "@loramesh/testing";
import { modelDir, startCluster } from "./mesh-helpers";

const input = (maxTokens: number): GenerateInput => ({
  prompt: { $case: "text", value: "def forward(self" },
  adapter: "",
  sampling: { maxTokens, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true },
});

/** The router's admission counters by tenant, outcome and reason, from its /metrics. */
async function admissionCounts(metricsAddress: string): Promise<Record<string, number>> {
  const text = await (await fetch(`http://${metricsAddress}/metrics`)).text();
  const counts: Record<string, number> = {};
  for (const m of text.matchAll(/^loramesh_admission_total\{([^}]*)\} (\d+)/gm)) {
    const labels: Record<string, string> = {};
    for (const l of (m[1] as string).matchAll(/(\w+)="([^"]*)"/g)) labels[l[1] as string] = l[2] as string;
    const key = [labels["tenant"], labels["outcome"], labels["reason"]].filter(Boolean).join("/");
    counts[key] = Number(m[2]);
  }
  return counts;
}

describe("admission control in a real cluster (limits, bounded queue, 429 with Retry-After)", function () {
  this.timeout(120_000);
  let cluster: LocalCluster;
  let t1: LoraMeshClient;
  let t2: LoraMeshClient;
  let workerPid = 0;

  before(async () => {
    cluster = await startCluster({
      modelDir: modelDir("tiny-llama"),
      mode: "coupled",
      workers: 1,
      loraServers: 0,
      extraArgs: {
        router: [
          "--api-keys",
          "k1=t1,k2=t2",
          "--max-in-flight",
          "2",
          "--tenant-max-in-flight",
          "1",
          "--max-queued",
          "1",
        ],
      },
    });
    t1 = new LoraMeshClient({ address: cluster.routerAddress, apiKey: "k1", defaultDeadlineMs: 60_000 });
    t2 = new LoraMeshClient({ address: cluster.routerAddress, apiKey: "k2", defaultDeadlineMs: 60_000 });
    workerPid = cluster.processes.find((p) => p.service === "base-worker")?.pid as number;
  });
  after(async () => {
    if (workerPid) process.kill(workerPid, "SIGCONT");
    t1?.close();
    t2?.close();
    await cluster?.stop();
  });

  it("admits to the limits, queues within the bound, refuses the rest with a retry hint, then serves all admitted", async () => {
    const metrics = cluster.processes.find((p) => p.service === "router")?.metricsAddress as string;
    const counts = (): Promise<Record<string, number>> => admissionCounts(metrics);
    const reached = (key: string, n: number) => async () => ((await counts())[key] === n ? true : undefined);

    // t1's first request holds its tenant's only slot; the worker then pauses mid-stream.
    const a = t1.generate(input(64))[Symbol.asyncIterator]();
    await a.next();
    process.kill(workerPid, "SIGSTOP");
    try {
      // t1's second request waits in the queue (its tenant is at its limit)...
      const b = t1.complete(input(4));
      await waitFor(reached("t1/queued", 1), 20_000, "t1's second request queued");
      // ...while t2's request is not behind it: it takes the second global slot at once.
      const c = t2.complete(input(4));
      await waitFor(reached("t2/admitted", 1), 20_000, "t2's request admitted");
      // Both slots and the one queue place are taken: the next is refused, with a hint.
      const refused = await t2.complete(input(4)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(refused).to.be.instanceOf(LoraMeshClientError);
      expect((refused as LoraMeshClientError).code).to.equal(status.RESOURCE_EXHAUSTED);
      expect((refused as LoraMeshClientError).retryAfterMs).to.be.greaterThan(0);
      // The same over HTTP: 429 with Retry-After.
      const http = await fetch(`http://${cluster.httpAddress}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer k2" },
        body: JSON.stringify({ model: "tiny-llama", prompt: "hi", max_tokens: 2 }),
      });
      expect(http.status).to.equal(429);
      expect(Number(http.headers.get("retry-after"))).to.be.at.least(1);
      expect(((await http.json()) as { error: { type: string } }).error.type).to.equal("rate_limit_error");
      process.kill(workerPid, "SIGCONT");
      // Everything admitted or queued completes.
      while (!(await a.next()).done);
      const [rb, rc] = await Promise.all([b, c]);
      expect(rb.tokenIds).to.have.length(4);
      expect(rc.tokenIds).to.have.length(4);
    } finally {
      process.kill(workerPid, "SIGCONT");
    }
    expect(await counts()).to.deep.equal({
      "t1/admitted": 1,
      "t1/queued": 1,
      "t2/admitted": 1,
      "t2/rejected/queue-full": 2,
    });
  });
});
