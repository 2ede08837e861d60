/**
 * Traces and metrics of a base worker: a span per engine step (child of the oldest request in the
 * batch, linked to the others), sampled spans per LoRA site with adapter, rank, tokens and
 * transport, and Prometheus series for queues, batches, LoRA-site latency by transport and tokens
 * per adapter.
 */
import type { Engine, LoraBackend, LoraSiteCall } from "@loramesh/engine";
import { context, ROOT_CONTEXT, SpanStatusCode, telemetry, trace, type Context } from "@loramesh/telemetry";
import { nativeStep, type StepRingTiming } from "@loramesh/native";
import type { RemoteLoraBackend } from "./backends/remote-lora-backend";

export class WorkerTelemetry {
  private readonly contexts = new Map<string, Context>();
  private readonly t = telemetry();
  private readonly batchTokens = this.t.meter.createHistogram("loramesh_batch_tokens", {
    description: "tokens fed per engine step",
    advice: { explicitBucketBoundaries: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] },
  });
  private readonly batchSequences = this.t.meter.createHistogram("loramesh_batch_sequences", {
    description: "sequences per engine step",
    advice: { explicitBucketBoundaries: [1, 2, 4, 8, 16, 32, 64] },
  });
  private readonly siteSeconds = this.t.meter.createHistogram("loramesh_lora_site_seconds", {
    description: "LoRA site latency seen by the worker, by transport",
    unit: "s",
    advice: { explicitBucketBoundaries: [0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05] },
  });
  // Ring sites of the native step: one sample per step (the step sums its sites natively).
  private readonly ringStepSeconds = this.t.meter.createHistogram("loramesh_lora_ring_step_seconds", {
    description: "time one engine step waited on LoRA sites through shared-memory rings, summed over its ring sites",
    unit: "s",
    advice: { explicitBucketBoundaries: [0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05] },
  });
  // Summed per step here and read at collection: four counter adds with an attribute each cost a
  // decode step tens of µs of the event loop (measured, issue 13).
  private readonly ringPhaseSeconds = { queue: 0, batch: 0, compute: 0, wake: 0 };
  private readonly tokens = this.t.meter.createCounter("loramesh_generated_tokens_total", {
    description: "tokens generated, by adapter",
  });
  private readonly requests = this.t.meter.createCounter("loramesh_worker_requests_total", {
    description: "sequences submitted, by adapter",
  });

  constructor(
    private readonly siteSpanRatio: number,
    private readonly transportOf: (call: LoraSiteCall) => string,
  ) {
    this.t.meter
      .createObservableCounter("loramesh_lora_ring_seconds_total", {
        description:
          "where ring sites' time went: queue (post → the LoRA server's thread saw it), batch (→ kernel start), compute (kernel and copy), wake (→ the worker saw the response)",
        unit: "s",
      })
      .addCallback((r) => {
        for (const [phase, seconds] of Object.entries(this.ringPhaseSeconds)) r.observe(seconds, { phase });
      });
  }

  /** Observes queue depths and the KV cache of an engine. */
  observe(engine: Engine, remote: RemoteLoraBackend | undefined): void {
    const m = this.t.meter;
    m.createObservableGauge("loramesh_worker_running_sequences", { description: "sequences decoding" }).addCallback(
      (r) => r.observe(engine.stats().running),
    );
    m.createObservableGauge("loramesh_worker_waiting_sequences", { description: "sequences queued" }).addCallback((r) =>
      r.observe(engine.stats().waiting),
    );
    m.createObservableGauge("loramesh_kv_blocks_used", { description: "KV-cache blocks in use" }).addCallback((r) =>
      r.observe(engine.stats().kvBlocksUsed),
    );
    m.createObservableGauge("loramesh_kv_blocks_total", { description: "KV-cache blocks" }).addCallback((r) =>
      r.observe(engine.stats().kvBlocksTotal),
    );
    this.observePrefixCache(engine);
    if (remote) {
      m.createObservableCounter("loramesh_lora_ring_sites_total", {
        description:
          "LoRA sites the native step sent through shared-memory rings itself, and those it handed back to JavaScript",
      }).addCallback((r) => {
        const s = nativeStep.routedStats();
        r.observe(s.ringSites, { path: "ring" });
        r.observe(s.fallbackSites, { path: "fallback" });
      });
      m.createObservableCounter("loramesh_lora_ring_rows_total", {
        description: "rows with an adapter the native step sent through shared-memory rings itself",
      }).addCallback((r) => r.observe(nativeStep.routedStats().ringRows));
      m.createObservableCounter("loramesh_lora_ucx_step_sites_total", {
        description:
          "LoRA sites the native step sent over UCX connections to other hosts itself (no JavaScript per site)",
      }).addCallback((r) => r.observe(nativeStep.routedStats().ucxSites));
      m.createObservableCounter("loramesh_lora_ucx_step_rows_total", {
        description: "rows with an adapter the native step sent over UCX connections itself",
      }).addCallback((r) => r.observe(nativeStep.routedStats().ucxRows));
      m.createObservableCounter("loramesh_lora_bytes_total", {
        description: "activation and delta bytes moved to and from LoRA servers",
        unit: "By",
      }).addCallback((r) => {
        for (const transport of ["grpc", "shm", "ucx"] as const) {
          r.observe(remote.bytes[transport].sent, { transport, direction: "sent" });
          r.observe(remote.bytes[transport].received, { transport, direction: "received" });
        }
      });
      // 1 for the wire each connected LoRA server is reached over now.
      m.createObservableGauge("loramesh_lora_transport", {
        description: "the wire in use toward each LoRA server (value 1), by server and transport",
      }).addCallback((r) => {
        for (const [server, transport] of Object.entries(remote.transports())) r.observe(1, { server, transport });
      });
    }
  }

  /** Prefix-cache series: hit rate per adapter = hit tokens / queried tokens. */
  private observePrefixCache(engine: Engine): void {
    const m = this.t.meter;
    m.createObservableGauge("loramesh_kv_blocks_cached", {
      description: "idle KV-cache blocks kept by the prefix cache",
    }).addCallback((r) => r.observe(engine.stats().kvBlocksCached));
    const series = [
      ["loramesh_prefix_cache_lookups_total", "sequences looked up in the prefix cache, by adapter", "lookups"],
      ["loramesh_prefix_cache_queried_tokens_total", "prompt tokens looked up, by adapter", "queriedTokens"],
      ["loramesh_prefix_cache_hit_tokens_total", "prompt tokens served from the prefix cache, by adapter", "hitTokens"],
    ] as const;
    for (const [name, description, field] of series) {
      m.createObservableCounter(name, { description }).addCallback((r) => {
        const byAdapter = engine.stats().prefixCache?.byAdapter ?? {};
        for (const [adapter, counts] of Object.entries(byAdapter)) r.observe(counts[field], { adapter });
      });
    }
  }

  /** Remembers the request context a sequence belongs to. */
  begin(sequenceId: string, adapter: string): void {
    this.contexts.set(sequenceId, context.active());
    this.requests.add(1, { adapter: adapter || "base" });
  }

  end(sequenceId: string, adapter: string, generated: number): void {
    this.contexts.delete(sequenceId);
    this.tokens.add(generated, { adapter: adapter || "base" });
  }

  /** The engine's step hook. */
  step = <T>(sequenceIds: readonly string[], tokens: number, run: () => Promise<T>): Promise<T> => {
    this.batchTokens.record(tokens);
    this.batchSequences.record(sequenceIds.length);
    const contexts = sequenceIds.map((id) => this.contexts.get(id)).filter((c): c is Context => c !== undefined);
    const parent = contexts[0];
    // The engine loop keeps whatever context started it; steps must not inherit that request's trace.
    if (!this.t.tracingEnabled || !parent) return context.with(ROOT_CONTEXT, run);
    const links = contexts
      .slice(1)
      .map((c) => trace.getSpanContext(c))
      .filter((c) => c !== undefined)
      .map((c) => ({ context: c }));
    return this.t.tracer.startActiveSpan(
      "engine.step",
      { attributes: { "loramesh.sequences": sequenceIds.length, "loramesh.tokens": tokens }, links },
      parent,
      async (span) => {
        try {
          return await run();
        } finally {
          span.end();
        }
      },
    );
  };

  /**
   * One step's ring-site timing (summed natively over its sites): the per-step histogram, the
   * per-phase counters, and attributes on the step's span (active while the step runs).
   */
  ringTiming(t: StepRingTiming): void {
    this.ringStepSeconds.record(t.ringWaitUs / 1e6);
    const sums = this.ringPhaseSeconds;
    sums.queue += t.ringQueueUs / 1e6;
    sums.batch += t.ringBatchUs / 1e6;
    sums.compute += t.ringComputeUs / 1e6;
    sums.wake += t.ringWakeUs / 1e6;
    if (!this.t.tracingEnabled) return;
    trace.getSpan(context.active())?.setAttributes({
      "loramesh.ring.sites": t.ringSites,
      "loramesh.ring.sleeps": t.ringSleeps,
      "loramesh.ring.wait_us": Math.round(t.ringWaitUs),
      "loramesh.ring.compute_us": Math.round(t.ringComputeUs),
    });
  }

  /** Wraps a LoRA backend with site spans (sampled) and the latency histogram. */
  wrap(backend: LoraBackend): LoraBackend {
    // A native site backend (coupled mode's local kernels) runs on the step's thread, with no
    // JavaScript per site, so its sites get no span and no latency sample.
    // Ring and UCX sites of the native step (stepSiteBackend) likewise; the worker counts them instead
    // (loramesh_lora_ring_sites_total, loramesh_lora_ucx_step_sites_total).
    const nativeSites = backend.nativeSiteBackend?.bind(backend);
    const stepSites = backend.stepSiteBackend?.bind(backend);
    const stepFailed = backend.stepSiteFailed?.bind(backend);
    return {
      ...(nativeSites ? { nativeSiteBackend: nativeSites } : {}),
      ...(stepSites ? { stepSiteBackend: stepSites, stepRingTiming: (t: StepRingTiming) => this.ringTiming(t) } : {}),
      ...(stepFailed ? { stepSiteFailed: stepFailed } : {}),
      has: (id) => backend.has(id),
      contentHash: (id) => backend.contentHash?.(id),
      apply: async (call) => {
        const transport = this.transportOf(call);
        const started = performance.now();
        const sampled =
          this.t.tracingEnabled && trace.getSpan(context.active()) !== undefined && Math.random() < this.siteSpanRatio;
        const run = () => backend.apply(call);
        try {
          if (!sampled) return await run();
          const used = [...new Set(Array.from(call.rowAdapter).filter((a) => a >= 0))].map(
            (a) => call.adapters[a] as string,
          );
          await this.t.tracer.startActiveSpan(
            "lora.site",
            {
              attributes: {
                "loramesh.layer": call.layer,
                "loramesh.site": call.site,
                "loramesh.tokens": call.rowAdapter.length,
                "loramesh.adapters": used.join(","),
                "loramesh.transport": transport,
              },
            },
            async (span) => {
              try {
                await run();
              } catch (err) {
                span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
                throw err;
              } finally {
                span.end();
              }
            },
          );
        } finally {
          this.siteSeconds.record((performance.now() - started) / 1000, { transport, site: call.site });
        }
      },
    };
  }
}
