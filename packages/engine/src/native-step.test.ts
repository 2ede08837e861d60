import { expect } from "chai";
import { readdirSync } from "node:fs";
import { NotFoundError, UnavailableError } from "@loramesh/errors";
import { NativeShapeError, NativeSlotError, nativeStep, type SiteBackendHandle } from "@loramesh/native";
import { loadAdapter } from "./adapter";
import { forward, type ForwardSequence } from "./forward";
import { KvCache } from "./kv-cache";
import { LocalLoraBackend } from "./local-lora-backend";
import type { LoraBackend, LoraSiteCall } from "./lora-backend";
import { Model } from "./model";
import { adapterDir, modelDir, MODELS } from "./test-fixtures";

function setup(m: string): { model: Model; local: LocalLoraBackend; adapters: string[] } {
  const model = Model.load(modelDir(m));
  const local = new LocalLoraBackend(model.config);
  const adapters = readdirSync(adapterDir(m, "")).sort();
  for (const a of adapters) local.add(a, loadAdapter(adapterDir(m, a), model.config));
  return { model, local, adapters };
}

/** A prefill step of four sequences (one without adapter), then a decode step. */
async function twoSteps(model: Model, lora: LoraBackend, adapters: string[]): Promise<Float32Array[]> {
  const cache = new KvCache(model.config.numLayers, 32, 4, model.config.numKvHeads, model.config.headDim);
  const prompts = [
    [1, 5, 9, 13, 17, 21, 2],
    [1, 7, 8],
    [1, 2, 3, 4, 5],
    [1, 40, 41],
  ];
  const tables = prompts.map(() => [] as number[]);
  tables.forEach((t) => cache.ensure(t, 16));
  const adapterOf = [adapters[0], undefined, adapters[1], adapters[adapters.length - 1]];
  const step = (tokens: number[][], start: number[], logits: ForwardSequence["logits"]) =>
    forward(
      model,
      cache,
      lora,
      tokens.map((t, i) => ({
        tokens: t,
        startPosition: start[i] as number,
        blockTable: tables[i] as number[],
        adapterId: adapterOf[i],
        logits,
      })),
    );
  const first = await step(prompts, [0, 0, 0, 0], "all");
  const second = await step(
    prompts.map((_, i) => [30 + i]),
    prompts.map((p) => p.length),
    "last",
  );
  return [...first, ...second];
}

/** The local backend seen only through `apply`: the step hands every site back to JavaScript. */
function throughCallback(local: LocalLoraBackend, seen: LoraSiteCall[] = []): LoraBackend {
  return {
    has: (id) => local.has(id),
    apply: (call) => {
      seen.push(call);
      return local.apply(call);
    },
  };
}

/**
 * A backend with a per-step routed native backend: `routeAdapters` go to `route()` from the step's
 * thread, the rest through `apply` (the fallback), as the mesh's rings and stream do.
 */
function routed(local: LocalLoraBackend, routeAdapters: string[], route: () => SiteBackendHandle, failed: unknown[]) {
  const backend: LoraBackend = {
    has: (id) => local.has(id),
    apply: (call) => local.apply(call),
    stepSiteBackend: (adapters, fallback) =>
      nativeStep.routedSiteBackend(
        [{ adapters: routeAdapters.filter((a) => adapters.includes(a)), backend: route(), timeoutMs: 0, ring: false }],
        fallback(),
      ),
    stepSiteFailed: (_backend, err) => failed.push(err),
  };
  return backend;
}

describe("the native step", function () {
  this.timeout(120_000);

  for (const m of MODELS) {
    it(`${m}: a JavaScript backend behind the step gives the same bits as the native local backend`, async () => {
      const { model, local, adapters } = setup(m);
      const seen: LoraSiteCall[] = [];
      const native = await twoSteps(model, local, adapters);
      const viaJs = await twoSteps(model, throughCallback(local, seen), adapters);
      expect(viaJs.length).to.equal(native.length);
      native.forEach((logits, i) => {
        expect(logits.length).to.be.greaterThan(0);
        expect(Buffer.from((viaJs[i] as Float32Array).buffer).equals(Buffer.from(logits.buffer))).to.equal(true);
      });
      // Every layer's four sites, in order, once per step; MoE expert sites carry each row's expert.
      const L = model.config.numLayers;
      expect(seen.map((c) => `${c.layer}/${c.site}`).slice(0, 4 * L)).to.deep.equal(
        Array.from({ length: L }, (_, l) => ["qkv", "o", "gate_up", "down"].map((s) => `${l}/${s}`)).flat(),
      );
      expect(seen.length).to.equal(8 * L);
      const mlp = seen.filter((c) => c.site === "gate_up" || c.site === "down");
      expect(mlp.every((c) => (c.rowExpert !== undefined) === model.config.numExperts > 0)).to.equal(true);
    });
  }

  it("a routed backend (some adapters native, the rest through apply) gives the same bits", async () => {
    const { model, local, adapters } = setup("tiny-llama");
    const native = await twoSteps(model, local, adapters);
    const failed: unknown[] = [];
    const before = nativeStep.routedStats();
    const mixed = await twoSteps(
      model,
      routed(local, [adapters[0] as string], () => local.nativeSiteBackend(), failed),
      adapters,
    );
    const after = nativeStep.routedStats();
    native.forEach((logits, i) =>
      expect(Buffer.from((mixed[i] as Float32Array).buffer).equals(Buffer.from(logits.buffer))).to.equal(true),
    );
    expect(failed).to.deep.equal([]);
    // Sites with rows of both kinds were split: the fallback served a share of them.
    expect(after.fallbackSites).to.be.greaterThan(before.fallbackSites);
  });

  it("a routed step whose native backend fails a site runs again through apply, with the same bits", async () => {
    const { model, local, adapters } = setup("tiny-llama");
    const native = await twoSteps(model, local, adapters);
    const failed: unknown[] = [];
    const broken = () => nativeStep.callbackSiteBackend(() => Promise.reject(new Error("the ring's server is gone")));
    const rerun = await twoSteps(model, routed(local, adapters, broken, failed), adapters);
    native.forEach((logits, i) =>
      expect(Buffer.from((rerun[i] as Float32Array).buffer).equals(Buffer.from(logits.buffer))).to.equal(true),
    );
    // Each of the two steps failed once on the native backend, then succeeded through apply.
    expect(failed.length).to.equal(2);
    for (const err of failed) expect(err).to.be.instanceOf(UnavailableError);
  });

  it("a step backend kept across steps (one routed backend, one callback fallback) gives the same bits", async () => {
    const { model, local, adapters } = setup("tiny-llama");
    const native = await twoSteps(model, local, adapters);
    const fallbacks = new Set<SiteBackendHandle>();
    let kept: { fallback: SiteBackendHandle; handle: SiteBackendHandle } | undefined;
    const backend: LoraBackend = {
      has: (id) => local.has(id),
      apply: (call) => local.apply(call),
      // One adapter native, the rest through the callback fallback (split sites), kept as the mesh's is.
      stepSiteBackend: (_adapters, fallback) => {
        const fb = fallback();
        fallbacks.add(fb);
        if (kept?.fallback === fb) return kept.handle;
        const handle = nativeStep.routedSiteBackend(
          [{ adapters: adapters.slice(0, 1), backend: local.nativeSiteBackend(), timeoutMs: 0, ring: false }],
          fb,
        );
        kept = { fallback: fb, handle };
        return handle;
      },
    };
    for (let run = 0; run < 3; run++) {
      const logits = await twoSteps(model, backend, adapters);
      native.forEach((l, i) =>
        expect(Buffer.from((logits[i] as Float32Array).buffer).equals(Buffer.from(l.buffer))).to.equal(true),
      );
    }
    // Six steps, one callback backend (kept per LoRA backend), so one routed backend.
    expect(fallbacks.size).to.equal(1);
  });

  it("steps at once through one JavaScript backend each get their own sites", async () => {
    const { model, local, adapters } = setup("tiny-llama");
    const native = await twoSteps(model, local, adapters);
    // Two models' handles (two caches) step at once: one step uses the kept callback backend, the other its own.
    const lora = throughCallback(local);
    const runs = await Promise.all([0, 1, 2].map(() => twoSteps(model, lora, adapters)));
    for (const run of runs)
      native.forEach((l, i) =>
        expect(Buffer.from((run[i] as Float32Array).buffer).equals(Buffer.from(l.buffer))).to.equal(true),
      );
  });

  it("a site of a step that timed out does not reach the next step through the kept callback backend", async () => {
    const { model, local, adapters } = setup("tiny-llama");
    const native = await twoSteps(model, local, adapters);
    let release: (() => void) | undefined;
    let late = true;
    const seen: Array<readonly string[]> = [];
    const backend: LoraBackend = {
      has: (id) => local.has(id),
      apply: (call) => {
        seen.push(call.adapters);
        if (late) {
          late = false;
          // Answers only once the next step has begun (too late for its own step's 100 ms).
          return new Promise<void>((resolve) => (release = resolve)).then(() => void call.y.data.fill(1e6));
        }
        release?.();
        return local.apply(call);
      },
    };
    const cache = new KvCache(model.config.numLayers, 8, 4, model.config.numKvHeads, model.config.headDim);
    const table: number[] = [];
    cache.ensure(table, 4);
    let err: unknown;
    await forward(
      model,
      cache,
      backend,
      [{ tokens: [1, 2], startPosition: 0, blockTable: table, adapterId: adapters[1], logits: "last" }],
      { siteTimeoutMs: 100 },
    ).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(UnavailableError);
    expect(seen).to.have.length(1);
    // The next steps use other adapters; the late answer (written while they run) lands nowhere.
    const next = await twoSteps(model, backend, adapters);
    expect(release).to.not.equal(undefined);
    native.forEach((logits, i) =>
      expect(Buffer.from((next[i] as Float32Array).buffer).equals(Buffer.from(logits.buffer))).to.equal(true),
    );
    expect(seen.slice(1).every((a) => a.length === 3)).to.equal(true);
  });

  it("passes a JavaScript backend's own error to the caller", async () => {
    const { model, local, adapters } = setup("tiny-llama");
    const failing: LoraBackend = {
      has: () => true,
      apply: () => Promise.reject(new UnavailableError("LoRA server lora-7 stopped answering")),
    };
    let err: unknown;
    await twoSteps(model, failing, adapters).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(UnavailableError);
    expect((err as Error).message).to.equal("LoRA server lora-7 stopped answering");
    // The step is not left holding anything: the next one runs.
    expect((await twoSteps(model, local, adapters)).length).to.equal(8);
  });

  it("fails a site that never answers with UnavailableError after the site timeout", async () => {
    const { model, adapters } = setup("tiny-llama");
    const silent: LoraBackend = { has: () => true, apply: () => new Promise<void>(() => undefined) };
    const cache = new KvCache(model.config.numLayers, 8, 4, model.config.numKvHeads, model.config.headDim);
    const table: number[] = [];
    cache.ensure(table, 4);
    let err: unknown;
    await forward(
      model,
      cache,
      silent,
      [{ tokens: [1, 2], startPosition: 0, blockTable: table, adapterId: adapters[0], logits: "last" }],
      { siteTimeoutMs: 100 },
    ).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(UnavailableError);
    expect((err as Error).message).to.match(/no answer within 100 ms/);
  });

  it("refuses an adapter the local backend does not hold with NotFoundError", async () => {
    const { model, local } = setup("tiny-llama");
    const cache = new KvCache(model.config.numLayers, 8, 4, model.config.numKvHeads, model.config.headDim);
    const table: number[] = [];
    cache.ensure(table, 4);
    let err: unknown;
    await forward(model, cache, local, [
      { tokens: [1], startPosition: 0, blockTable: table, adapterId: "not-loaded", logits: "last" },
    ]).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(NotFoundError);
    expect((err as Error).message).to.match(/adapter not-loaded is not resident/);
  });

  it("rejects malformed step arrays with typed errors", async () => {
    const { model } = setup("tiny-llama");
    const cache = new KvCache(model.config.numLayers, 8, 4, model.config.numKvHeads, model.config.headDim);
    // A handle over this model's weights and cache, built through a first step.
    const table: number[] = [];
    cache.ensure(table, 4);
    await forward(model, cache, undefined, [
      { tokens: [1], startPosition: 0, blockTable: table, adapterId: undefined, logits: "none" },
    ]);
    const handle = nativeStep.createModel({
      hidden: model.config.hiddenSize,
      heads: model.config.numHeads,
      kvHeads: model.config.numKvHeads,
      headDim: model.config.headDim,
      intermediate: model.config.intermediateSize,
      vocab: model.config.vocabSize,
      experts: 0,
      topK: 0,
      eps: model.config.rmsNormEps,
      rotaryDim: model.config.rope.rotaryDim,
      invFreq: model.invFreq,
      attentionScaling: model.attentionScaling,
      embed: model.embed,
      finalNorm: model.finalNorm,
      lmHead: model.lmHead,
      layers: model.layers.map((l, i) => ({
        inputNorm: l.inputNorm,
        postNorm: l.postNorm,
        qkv: l.qkv,
        qkvBias: l.qkvBias,
        o: l.o,
        gateUp: l.mlp.kind === "dense" ? l.mlp.gateUp : l.qkv,
        down: l.mlp.kind === "dense" ? l.mlp.down : l.o,
        slidingWindow: 0,
        cache: { ...(cache.layers[i] as KvCache["layers"][number]), blocks: 8, blockSize: 4 },
      })),
    });
    const batch = {
      tokens: 2,
      seqs: 1,
      maxBlocks: 1,
      ids: Int32Array.of(1, 2),
      positions: Int32Array.of(0, 1),
      tokenSeq: Int32Array.of(0, 0),
      slots: Int32Array.of(0, 1),
      blockTables: Int32Array.of(table[0] as number),
      rowAdapter: Int32Array.of(-1, -1),
      adapters: [],
      logitRows: Int32Array.of(1),
      logits: new Float32Array(model.config.vocabSize),
      siteTimeoutMs: 0,
    };
    const rejected = (b: object) =>
      nativeStep.run(handle, { ...batch, ...b }, null).then(
        () => null,
        (e: unknown) => e,
      );
    expect(await rejected({})).to.equal(null);
    expect(await rejected({ positions: Int32Array.of(0) })).to.be.instanceOf(NativeShapeError);
    expect(await rejected({ tokenSeq: Int32Array.of(0, 3) })).to.be.instanceOf(NativeSlotError);
    expect(await rejected({ rowAdapter: Int32Array.of(0, -1) })).to.be.instanceOf(NativeSlotError);
    expect(await rejected({ ids: Int32Array.of(1, 1 << 30) })).to.be.instanceOf(NativeSlotError);
    expect(await rejected({ logits: new Float32Array(3) })).to.be.instanceOf(NativeShapeError);
    expect(() => nativeStep.createModel({} as Parameters<typeof nativeStep.createModel>[0])).to.throw(/must be/);
  });
});
