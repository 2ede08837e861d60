import { expect } from "chai";
import { createServer, type Server } from "node:http";
import type { LocalCluster } from "@loramesh/cli";
import { LoraMeshClient } from "@loramesh/sdk";
import { waitFor } from "@loramesh/testing";
import { adapterDir, golden, modelDir, registerAll, startCluster } from "./mesh-helpers";

interface Span {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  service: string;
  attributes: Record<string, unknown>;
}

/** An OTLP/HTTP (JSON) trace receiver, as a collector or Jaeger would run it. */
async function startReceiver(): Promise<{ url: string; spans: Span[]; close(): Promise<void> }> {
  const spans: Span[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.url === "/v1/traces") {
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
          resourceSpans: Array<{
            resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> };
            scopeSpans: Array<{
              spans: Array<{
                traceId: string;
                spanId: string;
                parentSpanId?: string;
                name: string;
                attributes?: Array<{ key: string; value: Record<string, unknown> }>;
              }>;
            }>;
          }>;
        };
        for (const rs of body.resourceSpans) {
          const service = rs.resource.attributes.find((a) => a.key === "service.name")?.value.stringValue ?? "";
          for (const ss of rs.scopeSpans) {
            for (const s of ss.spans) {
              const attributes = Object.fromEntries(
                (s.attributes ?? []).map((a) => [a.key, Object.values(a.value)[0]]),
              );
              spans.push({
                traceId: s.traceId,
                spanId: s.spanId,
                ...(s.parentSpanId ? { parentSpanId: s.parentSpanId } : {}),
                name: s.name,
                service,
                attributes,
              });
            }
          }
        }
      }
      res.setHeader("content-type", "application/json");
      res.end("{}");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    spans,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

async function scrape(address: string): Promise<string> {
  const res = await fetch(`http://${address}/metrics`);
  expect(res.status).to.equal(200);
  return res.text();
}

describe("operations: one trace across the mesh, Prometheus metrics per adapter", function () {
  this.timeout(120_000);
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  let cluster: LocalCluster;
  let client: LoraMeshClient;

  before(async () => {
    receiver = await startReceiver();
    cluster = await startCluster({
      modelDir: modelDir("tiny-llama"),
      workers: 1,
      // The LoRA server's site span exists on the gRPC stream only: ring sites run no JavaScript there.
      extraArgs: { "base-worker": ["--shared-memory=false"] },
      env: {
        ...process.env,
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_TRACES_EXPORTER: "otlp",
        OTEL_BSP_SCHEDULE_DELAY: "100",
        LORAMESH_LORA_SITE_SPAN_RATIO: "1",
      },
    });
    client = new LoraMeshClient({ address: cluster.routerAddress });
    await registerAll(client, "tiny-llama", ["sql-r8", "math-r4-mlp"]);
    void adapterDir;
  });

  after(async () => {
    client?.close();
    await cluster?.stop();
    await receiver?.close();
  });

  it("records one request as one trace with spans from the router, a base worker, a LoRA server and Redis", async () => {
    const ids = (golden("tiny-llama").prompts[0] as { ids: number[] }).ids;
    await client.complete({
      prompt: { $case: "tokenIds", value: { ids } },
      adapter: "sql-r8",
      sampling: { maxTokens: 3, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true },
      requestId: "traced-request",
    });
    const trace = await waitFor(
      () => {
        const admission = receiver.spans.find(
          (s) => s.name === "router.admission" && s.attributes["loramesh.adapter"] === "sql-r8",
        );
        if (!admission) return undefined;
        const inTrace = receiver.spans.filter((s) => s.traceId === admission.traceId);
        const services = new Set(inTrace.map((s) => s.service));
        const redis = inTrace.some(
          (s) => s.attributes["db.system"] === "redis" || s.attributes["db.system.name"] === "redis",
        );
        const names = new Set(inTrace.map((s) => s.name));
        const wanted = ["loramesh-router", "loramesh-base-worker", "loramesh-lora-server", "loramesh-provisioner"];
        const spansWanted = ["router.admission", "engine.step", "lora.site", "lora.site.execute"];
        // Parents end after their children: wait until every parent has arrived too.
        const ids = new Set(inTrace.map((s) => s.spanId));
        const complete = inTrace.every((s) => !s.parentSpanId || ids.has(s.parentSpanId));
        const ok = wanted.every((x) => services.has(x)) && redis && spansWanted.every((n) => names.has(n)) && complete;
        return ok ? inTrace : undefined;
      },
      20_000,
      "a trace with router, base-worker, lora-server and redis spans",
    );
    const names = new Set(trace.map((s) => s.name));
    for (const n of ["router.admission", "engine.step", "lora.site", "lora.site.execute"])
      expect(names, n).to.include(n);
    const site = trace.find((s) => s.name === "lora.site");
    expect(site?.attributes["loramesh.transport"]).to.be.oneOf(["shm", "grpc"]);
    expect(String(site?.attributes["loramesh.adapters"])).to.contain("sql-r8");
    // Every span but the client's root has its parent in the same trace.
    const spanIds = new Set(trace.map((s) => s.spanId));
    const orphans = trace.filter((s) => s.parentSpanId && !spanIds.has(s.parentSpanId));
    expect(orphans.map((s) => `${s.service}:${s.name}`)).to.deep.equal([]);
  });

  it("traces adapter loads through BullMQ into the LoRA server", async () => {
    await registerAll(client, "tiny-llama", ["rslora-r32"]);
    const load = await waitFor(
      () =>
        receiver.spans.find(
          (s) => s.name === "adapter.load" && String(s.attributes["loramesh.adapter"]).includes("rslora-r32"),
        ),
      20_000,
      "an adapter.load span",
    );
    expect(load.service).to.equal("loramesh-lora-server");
    expect(receiver.spans.some((s) => s.traceId === load.traceId && s.service === "loramesh-provisioner")).to.equal(
      true,
    );
  });

  it("serves per-adapter series on every metrics endpoint after traffic", async () => {
    await Promise.all(
      ["sql-r8", "math-r4-mlp", ""].map((adapter) =>
        client.complete({
          prompt: { $case: "text", value: "def forward(self" },
          adapter,
          sampling: { maxTokens: 4, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true },
        }),
      ),
    );
    const byService = (name: string) => cluster.processes.find((p) => p.service === name)?.metricsAddress as string;
    const router = await scrape(byService("router"));
    expect(router).to.match(/loramesh_requests_total\{[^}]*adapter="sql-r8"[^}]*\} \d/);
    expect(router).to.match(/loramesh_ttft_seconds_bucket\{[^}]*adapter="math-r4-mlp"/);
    expect(router).to.match(/loramesh_slo_requests_total\{[^}]*adapter="sql-r8"/);
    const worker = await scrape(byService("base-worker"));
    expect(worker).to.match(/loramesh_generated_tokens_total\{[^}]*adapter="default\.sql-r8\.[0-9a-f]+"/);
    expect(worker).to.match(/loramesh_lora_site_seconds_bucket\{[^}]*transport="(shm|grpc)"/);
    expect(worker).to.match(/loramesh_worker_running_sequences/);
    const lora = await scrape(byService("lora-server"));
    expect(lora).to.match(/loramesh_lora_rows_total\{[^}]*adapter="default\.math-r4-mlp\.[0-9a-f]+"/);
    expect(lora).to.match(/loramesh_adapter_resident\{[^}]*adapter="default\.sql-r8\.[0-9a-f]+"/);
    expect(lora).to.match(/loramesh_adapter_loads_total/);
    const provisioner = await scrape(byService("provisioner"));
    expect(provisioner).to.match(/loramesh_adapter_replicas\{[^}]*adapter="default\.sql-r8\.[0-9a-f]+"/);
    expect(provisioner).to.match(/loramesh_recommended_lora_servers(\{[^}]*\})? \d/);
  });

  it("reuses a prompt prefix only under the adapter that computed it, and counts hits per adapter", async () => {
    const worker = () => scrape(cluster.processes.find((p) => p.service === "base-worker")?.metricsAddress as string);
    const hits = (text: string, adapter: string): number =>
      Number(
        new RegExp(
          `loramesh_prefix_cache_hit_tokens_total\\{[^}]*adapter="default\\.${adapter}\\.[0-9a-f]+"[^}]*\\} (\\d+)`,
        ).exec(text)?.[1] ?? 0,
      );
    // A prompt no other test sends: 64 tokens, four full 16-token blocks before the last token.
    const ids = [1, ...[...(golden("tiny-llama").prompts[4] as { ids: number[] }).ids].reverse().slice(0, 64)];
    const run = (adapter: string) =>
      client.complete({
        prompt: { $case: "tokenIds", value: { ids } },
        adapter,
        sampling: { maxTokens: 6, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true },
      });
    const before = await worker();
    const cold = await run("sql-r8");
    const cached = await run("sql-r8");
    await run("math-r4-mlp"); // same tokens, other weights: must not hit
    const after = await worker();
    expect(cached.tokenIds).to.deep.equal(cold.tokenIds);
    expect(hits(after, "sql-r8") - hits(before, "sql-r8")).to.equal(64);
    expect(hits(after, "math-r4-mlp")).to.equal(hits(before, "math-r4-mlp"));
    expect(after).to.match(
      /loramesh_prefix_cache_queried_tokens_total\{[^}]*adapter="default\.math-r4-mlp\.[0-9a-f]+"/,
    );
    expect(after).to.match(/loramesh_kv_blocks_cached(\{[^}]*\})? [1-9]\d*/);
  });
});
