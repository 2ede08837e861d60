import { expect } from "chai";
import { cpSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DeadlineExceededError, FailedPreconditionError, NotFoundError } from "@loramesh/errors";
import { loadAdapter } from "@loramesh/engine";
import { loadModelConfig, siteShape } from "@loramesh/formats";
import type { ReceivedWork } from "@loramesh/lora-wire";
import { captureLogger, GOLDEN_DIR } from "@loramesh/testing";
import { AdapterPool, type AdapterPoolOptions } from "./adapter-pool";
import { SiteBatcher } from "./site-batcher";
import { LoraSiteExecutor } from "./site-executor";

const model = loadModelConfig(join(GOLDEN_DIR, "models", "tiny-llama"));
const dir = (name: string) => join(GOLDEN_DIR, "adapters", "tiny-llama", name);
const ADAPTER = "chat-r16-all"; // LoRA on every projection of every layer
const last = model.numLayers - 1;

function server(options: Partial<AdapterPoolOptions> = {}, layerWaitMs?: number) {
  const pool = new AdapterPool({
    model,
    capacityBytes: 1 << 24,
    hostCacheBytes: 0,
    logger: captureLogger(),
    ...options,
  });
  const batcher = new SiteBatcher({ pool, windowMs: 0 });
  const executor = new LoraSiteExecutor({
    model,
    batcher,
    layers: pool.layers,
    ...(layerWaitMs !== undefined ? { layerWaitMs } : {}),
  });
  return { pool, executor };
}

/** A deterministic qkv work item for `layer`: two rows under the adapter, one without. */
function work(layer: number): ReceivedWork {
  const { hIn } = siteShape(model, "qkv");
  const x = Float32Array.from({ length: 3 * hIn }, (_, i) => Math.sin(i * 0.37 + layer));
  return {
    stepId: layer,
    layer,
    site: "qkv",
    adapterIds: ["a"],
    rowAdapter: [0, -1, 0],
    rowExpert: [],
    rowWeight: [],
    x,
    rows: 3,
    hIn,
    traceparent: "",
    tracestate: "",
    transport: "grpc",
  };
}

describe("layer-wise adapter loading on the LoRA server", function () {
  this.timeout(60_000);

  it("serves layer 0 before the last layer is resident, holds later layers until they are, and matches a whole load", async () => {
    const events: string[] = [];
    let early: Promise<Float32Array> | undefined;
    let lastLayer: Promise<Float32Array> | undefined;
    const { pool, executor } = server({
      onLayerResident: async (_id, ready, total) => {
        events.push(`resident ${ready}/${total}`);
        if (ready !== 1) return;
        // Mid-load: a call for the last layer waits; one for layer 0 is served before we go on.
        lastLayer = executor.execute(work(last), 1).then((r) => (events.push(`served layer ${last}`), r.delta));
        early = executor.execute(work(0), 0).then((r) => (events.push("served layer 0"), r.delta));
        await early;
      },
    });
    const registered = loadAdapter(dir(ADAPTER), model).contentHash;
    await pool.load("a", dir(ADAPTER), registered, false);
    await lastLayer;
    expect(events.indexOf("served layer 0")).to.be.lessThan(
      events.indexOf(`resident ${model.numLayers}/${model.numLayers}`),
    );
    expect(events.indexOf(`served layer ${last}`)).to.be.greaterThan(
      events.indexOf(`resident ${last + 1}/${model.numLayers}`),
    );
    expect(pool.layers.isLoading("a")).to.equal(false);

    const whole = server({ layerwise: false });
    await whole.pool.load("a", dir(ADAPTER), registered, false);
    expect(await early).to.deep.equal((await whole.executor.execute(work(0), 0)).delta);
    expect(await lastLayer).to.deep.equal((await whole.executor.execute(work(last), 0)).delta);
  });

  it("fails waiting calls with NOT_FOUND when the adapter is unloaded mid-load, and leaves nothing resident", async () => {
    let waiting: Promise<unknown> | undefined;
    const { pool, executor } = server({
      onLayerResident: async (id, ready) => {
        if (ready !== 1) return;
        waiting = executor.execute(work(last), 0).catch((e: unknown) => e);
        pool.unload(id);
      },
    });
    const load = await pool.load("a", dir(ADAPTER), "", false).catch((e: unknown) => e);
    expect(load).to.be.instanceOf(FailedPreconditionError);
    expect(await waiting).to.be.instanceOf(NotFoundError);
    expect(pool.stats().residentIds).to.deep.equal([]);
    expect(pool.has("a")).to.equal(false);
  });

  it("gives up on a layer with DEADLINE_EXCEEDED after the wait limit", async () => {
    let failed: unknown;
    const { pool, executor } = server(
      {
        onLayerResident: async (_id, ready) => {
          // Layer 1 stays out until the call waiting for it has given up.
          if (ready === 1) failed = await executor.execute(work(last), 0).catch((e: unknown) => e);
        },
      },
      50,
    );
    await pool.load("a", dir(ADAPTER), "", false);
    expect(failed).to.be.instanceOf(DeadlineExceededError);
    expect((failed as Error).message).to.match(
      /layer 2 of adapter a was not resident within 50 ms \(1 layers loaded\)/,
    );
  });

  it("refuses files changed since registration before anything becomes resident", async () => {
    const tmp = mkdtempSync(join(tmpdir(), "lm-layerwise-"));
    try {
      const copy = join(tmp, ADAPTER);
      cpSync(dir(ADAPTER), copy, { recursive: true });
      const registered = loadAdapter(copy, model).contentHash;
      const weights = join(copy, "adapter_model.safetensors");
      const bytes = readFileSync(weights);
      bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 1;
      writeFileSync(weights, bytes);
      const changes: number[] = [];
      const { pool } = server({ onChange: () => changes.push(1) });
      const err = await pool.load("a", copy, registered, false).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(FailedPreconditionError);
      expect(pool.has("a")).to.equal(false);
      expect(changes).to.deep.equal([]);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
